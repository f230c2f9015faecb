package agent

import "context"

// reportLock orders the agent's endpoint reports to the controllers. An
// ADD's record of its one endpoint takes it shared (records of different
// endpoints do not interfere); a report of many endpoints (a session's
// reporter, the report before a lease) takes it exclusively, from the
// snapshot of the endpoints until the refusals are applied. Without it, a
// report listing an ADD in flight could be recorded by the controller while
// the ADD's own record was refused and the agent gave the pod other
// addresses: the controller would keep the old ones. Waiting honours the
// context.
type reportLock struct {
	excl  chan struct{} // one exclusive holder or waiter at a time
	slots chan struct{} // a shared holder has one slot, the exclusive one all
}

const reportLockSlots = 64

func newReportLock() *reportLock {
	return &reportLock{excl: make(chan struct{}, 1), slots: make(chan struct{}, reportLockSlots)}
}

// shared takes the lock shared; unlock releases it.
func (l *reportLock) shared(ctx context.Context) (unlock func(), err error) {
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// exclusive takes the lock exclusively; unlock releases it.
func (l *reportLock) exclusive(ctx context.Context) (unlock func(), err error) {
	select {
	case l.excl <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	release := func(n int) {
		for range n {
			<-l.slots
		}
		<-l.excl
	}
	for n := range reportLockSlots {
		select {
		case l.slots <- struct{}{}:
		case <-ctx.Done():
			release(n)
			return nil, ctx.Err()
		}
	}
	return func() { release(reportLockSlots) }, nil
}
