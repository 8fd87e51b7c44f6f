package wgconfig

import (
	"errors"
	"fmt"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// ErrNoPrivateKey is why a config without a private key makes no QR code:
// a QR code is for the phone apps, which cannot import one without a key
// and do not let the partner paste it in first.
var ErrNoPrivateKey = errors.New(`the config has no private key, and the WireGuard phone apps cannot import a QR code without one (iOS says only "Invalid QR Code"); hand over the file instead, and paste the key in the app`)

// importable refuses what no phone app would import from a QR code.
func importable(cfg []byte) error {
	c, err := Parse(cfg)
	if err != nil {
		return fmt.Errorf("not a wg-quick config: %w", err)
	}
	if c.Interface.PrivateKey == "" {
		return ErrNoPrivateKey
	}
	return nil
}

// QRTerminal renders a config that holds its private key as a QR code of half-block characters, two
// modules per character cell, so a typical config fits an 80-column
// terminal. Light modules are drawn and dark ones left blank, as `qrencode
// -t UTF8` does, which reads right on the usual dark terminal.
func QRTerminal(cfg []byte) (string, error) {
	if err := importable(cfg); err != nil {
		return "", err
	}
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

// QRPNG renders a config that holds its private key as a PNG QR code of
// size×size pixels.
func QRPNG(cfg []byte, size int) ([]byte, error) {
	if err := importable(cfg); err != nil {
		return nil, err
	}
	return qrcode.Encode(string(cfg), qrcode.Medium, size)
}
