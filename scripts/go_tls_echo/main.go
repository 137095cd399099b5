// A Go TLS echo over loopback in one process (crypto/tls on both sides), for scripts/bench_go_tls.py: with the
// argument N, N round trips of 1 KiB (a Write and a Read on each side), printing the microseconds per round
// trip; with "wait", it only waits for a byte on stdin (a process of this executable that keeps it running,
// so that `ebpftool agents` finds it and attaches its uprobes to the file).
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"os"
	"strconv"
	"time"
)

func main() {
	if os.Args[1] == "wait" {
		os.Stdin.Read(make([]byte, 1))
		return
	}
	n, _ := strconv.Atoi(os.Args[1])
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	ln, _ := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	go func() {
		c, _ := ln.Accept()
		buf := make([]byte, 1024)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			c.Write(buf)
		}
	}()
	c, _ := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	buf := make([]byte, 1024)
	c.Write(buf)
	io.ReadFull(c, buf)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		c.Write(buf)
		io.ReadFull(c, buf)
	}
	fmt.Printf("%.2f\n", float64(time.Since(t0).Microseconds())/float64(n))
}
