package wgconfig

import (
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// QRTerminal renders a config as a QR code of half-block characters, two
// modules per character cell, so a typical config fits an 80-column
// terminal. Light modules are drawn and dark ones left blank, as `qrencode
// -t UTF8` does, which reads right on the usual dark terminal.
func QRTerminal(cfg []byte) (string, error) {
	q, err := qrcode.New(string(cfg), qrcode.Low)
	if err != nil {
		return "", err
	}
	bits := q.Bitmap() // includes the quiet zone
	var b strings.Builder
	for y := 0; y < len(bits); y += 2 {
		for x := range bits[y] {
			top := bits[y][x]
			bottom := y+1 < len(bits) && bits[y+1][x]
			switch {
			case top && bottom:
				b.WriteRune(' ')
			case top:
				b.WriteRune('▄')
			case bottom:
				b.WriteRune('▀')
			default:
				b.WriteRune('█')
			}
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// QRPNG renders a config as a PNG QR code of size×size pixels.
func QRPNG(cfg []byte, size int) ([]byte, error) {
	return qrcode.Encode(string(cfg), qrcode.Medium, size)
}
