package service

import "time"

// SetPushHold shortens the push's hold for a test; the returned function
// restores it.
func SetPushHold(d time.Duration) (restore func()) {
	prev := pushHold
	pushHold = d
	return func() { pushHold = prev }
}
