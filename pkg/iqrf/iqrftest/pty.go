// Package iqrftest provides a simulated IQRF coordinator with bonded sensor
// nodes, speaking the UART or USB CDC framing on a pseudo-terminal, so the
// collector can open it as a serial device through the same code path as
// real hardware.
package iqrftest

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// PTY is a pseudo-terminal pair. Master is the coordinator's side; the
// collector opens SlavePath.
type PTY struct {
	Master    *os.File
	SlavePath string
	slave     *os.File
}

// OpenPTY makes a pseudo-terminal pair from /dev/ptmx with the slave in raw
// mode (no echo, no line editing), as a real serial port would be. The pair
// keeps a slave descriptor open so that the master does not see a hang-up
// while the collector closes and reopens the device.
func OpenPTY() (*PTY, error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("iqrftest: open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("iqrftest: unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("iqrftest: pty number: %w", err)
	}
	path := fmt.Sprintf("/dev/pts/%d", n)
	sfd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("iqrftest: open %s: %w", path, err)
	}
	for _, f := range []int{sfd, fd} {
		t, err := unix.IoctlGetTermios(f, unix.TCGETS)
		if err != nil {
			unix.Close(fd)
			unix.Close(sfd)
			return nil, fmt.Errorf("iqrftest: termios: %w", err)
		}
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB
		t.Cflag |= unix.CS8
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		if err := unix.IoctlSetTermios(f, unix.TCSETS, t); err != nil {
			unix.Close(fd)
			unix.Close(sfd)
			return nil, fmt.Errorf("iqrftest: set raw mode: %w", err)
		}
	}
	return &PTY{Master: os.NewFile(uintptr(fd), "/dev/ptmx"), SlavePath: path, slave: os.NewFile(uintptr(sfd), path)}, nil
}

// Close closes both sides: the collector's device hangs up, as when a
// coordinator is unplugged.
func (p *PTY) Close() error {
	err := p.slave.Close()
	if e := p.Master.Close(); err == nil {
		err = e
	}
	return err
}
