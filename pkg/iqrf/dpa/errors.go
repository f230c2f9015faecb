package dpa

import "fmt"

// ResponseCode is a DPA response code (ErrN). Non-zero codes are errors.
type ResponseCode uint8

// Response codes from DPA.h (identical in 4.16 and 4.32).
const (
	StatusNoError                ResponseCode = 0
	ErrorFail                    ResponseCode = 1
	ErrorPCMD                    ResponseCode = 2
	ErrorPNUM                    ResponseCode = 3
	ErrorAddr                    ResponseCode = 4
	ErrorDataLen                 ResponseCode = 5
	ErrorData                    ResponseCode = 6
	ErrorHWPID                   ResponseCode = 7
	ErrorNADR                    ResponseCode = 8
	ErrorIfaceCustomHandler      ResponseCode = 9
	ErrorMissingCustomDpaHandler ResponseCode = 10
	ErrorUserFrom                ResponseCode = 0x20
	ErrorUserTo                  ResponseCode = 0x3F
	StatusConfirmation           ResponseCode = 0xFF
)

var codeNames = [...]string{
	"STATUS_NO_ERROR", "ERROR_FAIL", "ERROR_PCMD", "ERROR_PNUM", "ERROR_ADDR", "ERROR_DATA_LEN",
	"ERROR_DATA", "ERROR_HWPID", "ERROR_NADR", "ERROR_IFACE_CUSTOM_HANDLER", "ERROR_MISSING_CUSTOM_DPA_HANDLER",
}

// Name is the DPA.h name of the code.
func (c ResponseCode) Name() string {
	switch {
	case int(c) < len(codeNames):
		return codeNames[c]
	case c >= ErrorUserFrom && c <= ErrorUserTo:
		return fmt.Sprintf("ERROR_USER_%02X", uint8(c))
	case c == StatusConfirmation:
		return "STATUS_CONFIRMATION"
	}
	return fmt.Sprintf("ERROR_0x%02X", uint8(c))
}

// Error makes a ResponseCode usable as an error: errors.Is(err, dpa.ErrorNADR).
func (c ResponseCode) Error() string {
	return fmt.Sprintf("dpa response code %d (%s)", uint8(c), c.Name())
}
