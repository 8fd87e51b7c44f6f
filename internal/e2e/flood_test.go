package e2e

import (
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/extranetgw/extranet/internal/firewall"
	"github.com/extranetgw/extranet/pkg/api"
)

// floodCost is figure 11: whether a partner that floods the gateway with
// refused packets slows the other partners. A peer of the first
// organisation, by the rules-alone path, sweeps in1's UDP ports (which
// its organisation was not granted) at BENCH_FLOOD_PPS packets a second,
// 100,000 by default; the gateway runs with scan-mode observe, so that it
// never suspends the sweeper, which would end the flood: the log's worst
// case. Meanwhile the bench's partner of the last organisation opens
// connections through the tunnel, and its rules-alone twin beside it.
//
// Three states take turns in each round, on one daemon: no flood; the
// flood, refused by a rule the bench puts first in the deny chain, which
// neither logs nor counts it; and the flood as the gateway refuses it,
// logged within the log's rate and counted past it. On two cores the
// sweeper itself takes much of one, so the flood against no flood says
// what this machine can do; logged against unlogged is what the log adds.
func floodCost(t *testing.T, b *bench, r *Rig, state string, flags []string, cfg, src, floodSrc string, rounds int) {
	t.Helper()
	pps := envInt("BENCH_FLOOD_PPS", 100000)
	r.run(r.NS, "ip", "link", "del", rulesNSVeth)
	r.StartDaemon(append(slices.Clone(flags), "--state-dir", state, "--scan-mode", "observe")...)
	defer r.StopDaemon()
	rulesOnly(t, r, src)
	rulesOnly(t, r, floodSrc)
	conf := r.PartnerUp(r.PA, "pa"+r.id, cfg)
	defer r.PartnerDown(r.PA, conf)
	reaches(t, r.PA, hostPort(in1Addr, 22), "in1")
	bypass := []string{firewall.DenyChain(api.DenyNotGranted), "-s", floodSrc + "/32", "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"}

	const none, unlogged, logged = 0, 1, 2
	offer := float64(envInt("BENCH_FLOOD_OFFER", 1000))
	var conns, rules, paced, p99 [3][]float64
	var sent, cpu [3][]float64
	var floodSent, floodLogged, floodLimited uint64
	var floodTime time.Duration
	var written int64
	for i := 0; i < rounds; i++ {
		for k := range 3 {
			if k == unlogged {
				r.Must(r.NS, append([]string{"iptables", "-I", bypass[0], "1"}, bypass[1:]...)...)
			}
			logged0, limited0 := refusalCounts(t, r)
			size0 := activitySize(state)
			var stop func() (int, time.Duration)
			if k != none {
				stop = flood(t, r.PB, floodSrc, in1Addr, pps)
				time.Sleep(500 * time.Millisecond)
			}
			pid, ticks, began := daemonPID(r), procTicks(daemonPID(r)), time.Now()
			conns[k] = append(conns[k], connRate(t, r.PA, hostPort(in1Addr, 22), 3*time.Second))
			rules[k] = append(rules[k], connRateFrom(t, r.PB, src, hostPort(in1Addr, 22), 3*time.Second))
			rate, lat := connPaced(t, r.PA, hostPort(in1Addr, 22), offer, 3*time.Second)
			paced[k], p99[k] = append(paced[k], rate), append(p99[k], float64(lat)/float64(time.Millisecond))
			cpu[k] = append(cpu[k], cpuPercent(procTicks(pid)-ticks, time.Since(began)))
			if stop != nil {
				n, d := stop()
				sent[k] = append(sent[k], float64(n)/d.Seconds())
				if k == logged {
					// What the log made of the flood, all of it: the
					// other partners are refused nothing.
					time.Sleep(200 * time.Millisecond)
					logged1, limited1 := refusalCounts(t, r)
					floodSent, floodLogged, floodLimited = floodSent+uint64(n), floodLogged+logged1-logged0, floodLimited+limited1-limited0
					written += activitySize(state) - size0
					floodTime += d
				}
			}
			if k == unlogged {
				r.Must(r.NS, append([]string{"iptables", "-D"}, bypass...)...)
			}
		}
	}
	at := fmt.Sprintf("%.0f refused packets/s from one partner (a UDP sweep; asked %d)", median(sent[logged]), pps)
	b.row("11. new connections/s, another partner, flood vs none", at, compared([2][]float64{conns[logged], conns[none]}, rounds, ""), "",
		"as many as it can open; the sweeper is the bench's own process on the same 2 cores")
	b.row("11. the same, rules alone", at, compared([2][]float64{rules[logged], rules[none]}, rounds, ""), "", "")
	b.row("11. new connections/s, another partner, flood logged vs unlogged", at, compared([2][]float64{conns[logged], conns[unlogged]}, rounds, ""), "",
		"unlogged: the same flood refused by a rule first in the deny chain, which neither logs nor counts it")
	b.row("11. the same, rules alone", at, compared([2][]float64{rules[logged], rules[unlogged]}, rounds, ""), "", "")
	b.row(fmt.Sprintf("11. another partner opening %.0f connections/s, flood vs none", offer), at, compared([2][]float64{paced[logged], paced[none]}, rounds, ""), "",
		fmt.Sprintf("connect p99 %.1f ms; %.1f ms with the flood unlogged, %.1f ms without it (medians)", median(p99[logged]), median(p99[unlogged]), median(p99[none])))
	s := floodTime.Seconds()
	b.row("11. the log during the flood", at,
		fmt.Sprintf("%.0f packets/s logged, %.0f/s counted past the rate; %d of %d sent counted; %.0f bytes/s written", float64(floodLogged)/s, float64(floodLimited)/s, floodLogged+floodLimited, floodSent, float64(written)/s), "",
		fmt.Sprintf("daemon CPU %.0f%% of one core, %.0f%% with the flood unlogged, %.0f%% without it (medians; the other partner's connections included)", median(cpu[logged]), median(cpu[unlogged]), median(cpu[none])))
}

// connPaced opens TCP connections from ns to addr at rate a second for d,
// one at a time, catching up when one took longer than its share, and
// returns the rate it achieved and the 99th percentile of the connect
// times.
func connPaced(t *testing.T, ns, addr string, rate float64, d time.Duration) (float64, time.Duration) {
	t.Helper()
	dialer := net.Dialer{Timeout: time.Second}
	var lat []time.Duration
	err := inNS(ns, func() error {
		began := time.Now()
		for time.Since(began) < d {
			if next := began.Add(time.Duration(float64(len(lat)) / rate * float64(time.Second))); time.Until(next) > 0 {
				time.Sleep(time.Until(next))
			}
			s := time.Now()
			c, err := dialer.Dial("tcp4", addr)
			if err != nil {
				return err
			}
			lat = append(lat, time.Since(s))
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return float64(len(lat)) / d.Seconds(), pct(lat, 99)
}

// flood sweeps dest's UDP ports from src, in namespace ns, at pps packets
// a second, until the returned stop is called; stop says how many it sent
// and for how long. It sends in batches, one system call each (sendmmsg),
// every millisecond, catching up on what it fell behind.
func flood(t *testing.T, ns, src, dest string, pps int) (stop func() (int, time.Duration)) {
	t.Helper()
	var c net.PacketConn
	if err := inNS(ns, func() error {
		var err error
		c, err = net.ListenPacket("udp4", src+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	pc := ipv4.NewPacketConn(c)
	ip := net.ParseIP(dest)
	const batch = 64
	msgs := make([]ipv4.Message, batch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{[]byte("sweep")}
		msgs[i].Addr = &net.UDPAddr{IP: ip}
	}
	done, result := make(chan struct{}), make(chan [2]int64, 1)
	go func() {
		defer c.Close()
		began := time.Now()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		n, port := 0, 1024
		for {
			select {
			case <-done:
				result <- [2]int64{int64(n), int64(time.Since(began))}
				return
			case <-tick.C:
			}
			due := min(int(time.Since(began).Seconds()*float64(pps))-n, pps/10)
			for due > 0 {
				k := min(due, batch)
				for i := 0; i < k; i++ {
					msgs[i].Addr.(*net.UDPAddr).Port = port
					if port++; port > 65535 {
						port = 1024
					}
				}
				w, err := pc.WriteBatch(msgs[:k], 0)
				if err != nil && w <= 0 {
					// A full socket buffer: the rest of this
					// millisecond's share waits for the next.
					break
				}
				n, due = n+w, due-w
			}
		}
	}()
	return func() (int, time.Duration) {
		close(done)
		v := <-result
		return int(v[0]), time.Duration(v[1])
	}
}

// refusalCounts are the refused packets the gateway logged and those it
// counted past the log's rate, since it started. Reading the activity log
// first has the daemon add up the counts so far, which it otherwise does
// every 10 s.
func refusalCounts(t *testing.T, r *Rig) (logged, limited uint64) {
	t.Helper()
	r.MustCTL("activity", "--denied", "--limit", "1", "-o", "json")
	st := r.status().Refusals
	if st == nil {
		t.Fatal("status has no refusals")
	}
	return st.Refused, st.RateLimited
}
