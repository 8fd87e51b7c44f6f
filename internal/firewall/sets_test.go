package firewall

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/netnstest"
	"github.com/extranetgw/extranet/internal/policy"
	"github.com/extranetgw/extranet/pkg/api"
)

var testSets = []Set{
	{Name: "extranet-1-net", Type: "hash:net", Members: []string{"10.10.1.0/24", "10.0.0.1/32"}},
	{Name: "extranet-1-port", Type: "hash:net,port", Members: []string{"10.10.2.2/32,tcp:443", "10.10.2.2/32,udp:5000-5010", "10.20.0.0/16,tcp:22"}},
	{Name: "extranet-2-net", Type: "hash:net"},
	{Name: PeerSet, Type: "hash:ip", Timeout: true, Comment: true, SkbInfo: true, Members: []string{
		peerMember(netip.MustParseAddr("100.64.1.2"), entry{Peer: policy.Peer{Group: 7}}, time.Time{}),
		peerMember(netip.MustParseAddr("100.64.1.3"), entry{Peer: policy.Peer{Group: 300, Ends: time.Unix(100, 0)}, timed: true}, time.Unix(0, 0)),
	}},
}

func TestSetScriptTouchesOnlyWhatDiffers(t *testing.T) {
	// What `ipset save` prints once testSets are loaded.
	var saved strings.Builder
	for _, s := range testSets {
		opts := ""
		if s.Timeout {
			opts += " timeout 0"
		}
		if s.Comment {
			opts += " comment"
		}
		if s.SkbInfo {
			opts += " skbinfo"
		}
		saved.WriteString("create " + s.Name + " " + s.Type + " family inet hashsize 1024 maxelem 65536" + opts + " bucketsize 12 initval 0x1\n")
		for m := range kernelMembers(s.Members) {
			// A running timeout, as the kernel prints it.
			saved.WriteString("add " + s.Name + " " + strings.Replace(m, "timed", "timeout 57", 1) + "\n")
		}
	}
	saved.WriteString("create someone-elses hash:ip family inet\nadd someone-elses 192.0.2.1\n")
	have := parseSave(saved.String())
	if _, ok := have["someone-elses"]; ok {
		t.Error("a set not ours was read as ours")
	}
	if got := setScript(testSets, have); got != "" {
		t.Errorf("sets already in place rewritten:\n%s", got)
	}

	changed := append([]Set(nil), testSets...)
	changed[0] = Set{Name: "extranet-1-net", Type: "hash:net", Members: []string{"10.10.1.0/24"}}
	changed = append(changed, Set{Name: "extranet-3-net", Type: "hash:net", Members: []string{"10.30.0.0/16"}})
	want := "create extranet-1-net-t hash:net family inet maxelem 1048576 -exist\nflush extranet-1-net-t\nadd extranet-1-net-t 10.10.1.0/24\n" +
		"swap extranet-1-net-t extranet-1-net\ndestroy extranet-1-net-t\n" +
		"create extranet-3-net hash:net family inet maxelem 1048576\nadd extranet-3-net 10.30.0.0/16\n"
	if got := setScript(changed, have); got != want {
		t.Errorf("script:\n%s\nwant:\n%s", got, want)
	}
	// A peer set of an earlier release, without marks and with no member,
	// is replaced by one with them, though its members do not differ.
	old := parseSave("create extranet-peers hash:ip family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x1\n")
	if got := setScript([]Set{{Name: PeerSet, Type: "hash:ip", SkbInfo: true}}, old); !strings.Contains(got, "create extranet-peers-t hash:ip family inet skbinfo") || !strings.Contains(got, "swap") {
		t.Errorf("a peer set without skbinfo kept:\n%s", got)
	}
	// An attempts set of an earlier release has ipset's 1,024 buckets,
	// too few for the kernel to fill: it is made again; one with the
	// buckets asked for, or more, stays.
	att := attemptsSet(api.DenyHost, netip.MustParsePrefix("100.64.0.0/16"))
	old = parseSave("create extranet-refused-host hash:ip family inet hashsize 1024 maxelem 1048576 counters bucketsize 12 initval 0x1\n")
	if got := setScript([]Set{att}, old); !strings.Contains(got, "create extranet-refused-host-t hash:ip family inet counters hashsize 32768") || !strings.Contains(got, "swap") {
		t.Errorf("an attempts set with too few buckets kept:\n%s", got)
	}
	old = parseSave("create extranet-refused-host hash:ip family inet hashsize 65536 maxelem 1048576 counters bucketsize 12 initval 0x1\n")
	if got := setScript([]Set{att}, old); got != "" {
		t.Errorf("an attempts set with enough buckets remade:\n%s", got)
	}
	// A temporary set a dead run left, perhaps without skbinfo, goes first.
	old = parseSave("create extranet-peers hash:ip family inet hashsize 1024 maxelem 1048576\ncreate extranet-peers-t hash:ip family inet hashsize 1024 maxelem 1048576\n")
	if got := setScript([]Set{{Name: PeerSet, Type: "hash:ip", SkbInfo: true}}, old); !strings.HasPrefix(got, "destroy extranet-peers-t\ncreate extranet-peers-t") {
		t.Errorf("a left temporary set is not destroyed first:\n%s", got)
	}
}

func TestKernelMembers(t *testing.T) {
	got := kernelMembers([]string{"10.0.0.1/32", "10.1.0.0/16", "10.2.0.3/32,udp:7-9", "10.3.0.0/24,tcp:443", "10.4.0.0/24,tcp:1-5000", "junk"})
	for _, m := range []string{"10.0.0.1", "10.1.0.0/16", "10.2.0.3,udp:7", "10.2.0.3,udp:8", "10.2.0.3,udp:9", "10.3.0.0/24,tcp:443", "10.4.0.0/24,tcp:1-5000", "junk"} {
		if !got[m] {
			t.Errorf("kernel form lacks %q: %v", m, got)
		}
	}
	if len(got) != 8 {
		t.Errorf("kernel form has %d members, want 8: %v", len(got), got)
	}
}

// TestKernelPrintsSetsAsExpected loads sets into a real kernel and checks
// that reading them back finds nothing to change: otherwise every start
// would refill every set.
func TestKernelPrintsSetsAsExpected(t *testing.T) {
	netnstest.Run(t, func(string) {
		if out, err := run(setScript(testSets, nil), "ipset", "restore"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		saved, err := run("", "ipset", "save")
		if err != nil {
			t.Fatal(err)
		}
		if got := setScript(testSets, parseSave(saved)); got != "" {
			t.Errorf("the kernel's sets read back as different:\n%s\nipset save:\n%s", got, saved)
		}
	})
}
