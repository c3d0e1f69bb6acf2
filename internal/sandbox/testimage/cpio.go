package testimage

import (
	"fmt"
	"io"
)

// cpioWriter writes a "newc" archive, the format the kernel unpacks as an
// initramfs, with owner root and time zero so the bytes depend only on the
// contents.
type cpioWriter struct {
	w   io.Writer
	ino int
	err error
}

func newCPIO(w io.Writer) *cpioWriter { return &cpioWriter{w: w, ino: 1} }

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
	modeChr  = 0o020000
)

func (c *cpioWriter) entry(name string, mode uint32, data []byte, rmaj, rmin int) {
	if c.err != nil {
		return
	}
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(name)+1, 0)
	c.ino++
	buf := append([]byte(hdr), name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	buf = append(buf, data...)
	buf = pad4(buf)
	_, c.err = c.w.Write(buf)
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func (c *cpioWriter) dir(name string)                         { c.entry(name, modeDir|0o755, nil, 0, 0) }
func (c *cpioWriter) file(name string, perm uint32, b []byte) { c.entry(name, modeFile|perm, b, 0, 0) }
func (c *cpioWriter) symlink(name, target string) {
	c.entry(name, modeLink|0o777, []byte(target), 0, 0)
}
func (c *cpioWriter) charDev(name string, maj, min int) { c.entry(name, modeChr|0o600, nil, maj, min) }

func (c *cpioWriter) close() error {
	c.ino = 0
	c.entry("TRAILER!!!", 0, nil, 0, 0)
	if c.err != nil {
		return fmt.Errorf("test image: write cpio: %w", c.err)
	}
	return nil
}
