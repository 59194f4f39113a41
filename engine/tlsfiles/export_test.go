package tlsfiles

// OnSwapPause runs f during Reload's pause before its second read, to
// swap the files at that moment (a kubelet's swap between the two reads).
func (p *Pair) OnSwapPause(f func()) { p.pause = f }
