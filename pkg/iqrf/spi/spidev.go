package spi

import (
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// spiIOCTransfer is struct spi_ioc_transfer (linux/spi/spidev.h).
type spiIOCTransfer struct {
	txBuf, rxBuf   uint64
	len, speedHz   uint32
	delayUsecs     uint16
	bitsPerWord    uint8
	csChange       uint8
	txNbits        uint8
	rxNbits        uint8
	wordDelayUsecs uint8
	pad            uint8
}

const (
	spiIOCWrMode        = 0x40016b01 // _IOW('k', 1, __u8)
	spiIOCWrBitsPerWord = 0x40016b03 // _IOW('k', 3, __u8)
	spiIOCWrMaxSpeedHz  = 0x40046b04 // _IOW('k', 4, __u32)
)

func spiIOCMessage(n int) uintptr { return uintptr(0x40006b00 | (n*32)<<16) } // _IOW('k', 0, char[n*32])

// Device is a spidev device set up for the IQRF SPI protocol: mode 0, 8
// bits, 250 kHz, with the inter-byte gap the TR module needs.
type Device struct {
	f       *os.File
	speedHz uint32
	byteGap time.Duration
	xfers   []spiIOCTransfer
}

// OpenDevice opens a spidev device such as /dev/spidev0.0.
func OpenDevice(path string) (*Device, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("spi: open %s: %w", path, err)
	}
	d := &Device{f: f, speedHz: 250000, byteGap: 800 * time.Microsecond}
	mode, bits, speed := uint8(0), uint8(8), d.speedHz
	for _, s := range []struct {
		req uintptr
		ptr unsafe.Pointer
	}{{spiIOCWrMode, unsafe.Pointer(&mode)}, {spiIOCWrBitsPerWord, unsafe.Pointer(&bits)}, {spiIOCWrMaxSpeedHz, unsafe.Pointer(&speed)}} {
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), s.req, uintptr(s.ptr)); errno != 0 {
			f.Close()
			return nil, fmt.Errorf("spi: configure %s: %w", path, errno)
		}
	}
	return d, nil
}

// Open opens a spidev device as a DPA link.
func Open(path string) (*Link, error) {
	d, err := OpenDevice(path)
	if err != nil {
		return nil, err
	}
	return NewLink(d), nil
}

// Transfer sends tx and receives rx, one byte per transfer segment so the
// TR module gets its inter-byte gap.
func (d *Device) Transfer(tx, rx []byte) error {
	if len(tx) != len(rx) || len(tx) == 0 {
		return fmt.Errorf("spi: transfer of %d/%d bytes", len(tx), len(rx))
	}
	d.xfers = d.xfers[:0]
	for i := range tx {
		d.xfers = append(d.xfers, spiIOCTransfer{
			txBuf: uint64(uintptr(unsafe.Pointer(&tx[i]))), rxBuf: uint64(uintptr(unsafe.Pointer(&rx[i]))),
			len: 1, speedHz: d.speedHz, bitsPerWord: 8, delayUsecs: uint16(d.byteGap / time.Microsecond),
		})
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), spiIOCMessage(len(d.xfers)), uintptr(unsafe.Pointer(&d.xfers[0])))
	runtime.KeepAlive(tx)
	runtime.KeepAlive(rx)
	if errno != 0 {
		return fmt.Errorf("spi: transfer: %w", errno)
	}
	return nil
}

// Close closes the device.
func (d *Device) Close() error { return d.f.Close() }
