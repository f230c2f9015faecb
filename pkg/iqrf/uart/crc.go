// Package uart is the IQRF DPA UART link layer: HDLC-like framing with 0x7E
// flags, 0x7D escaping and a 1-Wire-compatible CRC-8, over a serial port.
package uart

// crcTable is CRC-8 with polynomial x^8+x^5+x^4+1 (0x31, reflected 0x8C),
// processed LSB first, as clibuart's dpa_do_CRC8.
var crcTable = func() (t [256]byte) {
	for i := range t {
		c := byte(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0x8C
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return t
}()

// CRCInit is the initial CRC value.
const CRCInit = 0xFF

// CRC8 returns the CRC of b continued from crc (start with CRCInit). A frame
// followed by its CRC byte gives 0.
func CRC8(crc byte, b []byte) byte {
	for _, c := range b {
		crc = crcTable[crc^c]
	}
	return crc
}
