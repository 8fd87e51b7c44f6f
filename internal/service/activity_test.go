package service

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/extranetgw/extranet/internal/activity"
	"github.com/extranetgw/extranet/pkg/api"
)

// fakeActivity answers every read with its flows, and remembers the
// queries it was asked.
type fakeActivity struct {
	flows []api.Flow
	err   error
	asked []activity.Query
}

func (f *fakeActivity) Read(q activity.Query) ([]api.Flow, error) {
	f.asked = append(f.asked, q)
	return f.flows, f.err
}

func (f *fakeActivity) Each(q activity.Query, fn func(api.Flow)) error {
	flows, err := f.Read(q)
	for _, fl := range flows {
		fn(fl)
	}
	return err
}

// TestActivityScope: the reader is asked for what the caller may see, a
// query about an organisation outside it is refused before anything is
// read, and an activity log that is off says so.
func TestActivityScope(t *testing.T) {
	ctx := WithActor(context.Background(), "alice")
	flow := api.Flow{Org: "acme", Peer: "acme/laptop", Proto: "tcp", Dest: "10.20.0.10", Port: 443, End: api.FlowClosed}

	_, err := New(Options{}).Activity(ctx, activity.Query{})
	wantCode(t, "activity logging off", err, api.CodeNotFound, "activity logging is off")

	fake := &fakeActivity{flows: []api.Flow{flow}}
	svc := New(Options{Activity: fake})
	for _, tc := range []struct {
		what string
		q    activity.Query
	}{
		{"admin or auditor: every organisation", activity.Query{}},
		{"sponsor of acme and initech", activity.Query{Orgs: []string{"acme", "initech"}}},
		{"sponsor of acme, about acme", activity.Query{Orgs: []string{"acme"}, Org: "acme", Peer: "acme/laptop"}},
		// A sponsor of nothing sees nothing, not everything.
		{"sponsor of nothing", activity.Query{Orgs: []string{}}},
	} {
		fake.asked = nil
		got, err := svc.Activity(ctx, tc.q)
		if err != nil || len(got) != 1 || got[0] != flow {
			t.Errorf("%s: %v %+v", tc.what, err, got)
		}
		if len(fake.asked) != 1 || !slices.Equal(fake.asked[0].Orgs, tc.q.Orgs) || (fake.asked[0].Orgs == nil) != (tc.q.Orgs == nil) ||
			fake.asked[0].Org != tc.q.Org || fake.asked[0].Peer != tc.q.Peer {
			t.Errorf("%s: the reader was asked %+v, want %+v", tc.what, fake.asked, tc.q)
		}
	}

	// Like the audit log: a sponsor asking about another organisation
	// is refused, by name or by one of its peers.
	fake.asked = nil
	for _, q := range []activity.Query{
		{Orgs: []string{"acme"}, Org: "globex"},
		{Orgs: []string{"acme"}, Peer: "globex/laptop"},
		{Orgs: []string{}, Org: "acme"},
	} {
		_, err := svc.Activity(ctx, q)
		wantCode(t, "sponsor asks about another organisation", err, api.CodeForbidden, "alice may not read the activity of organisation")
	}
	if len(fake.asked) != 0 {
		t.Errorf("refused queries were read: %+v", fake.asked)
	}

	// Nothing matched is an empty list, not null; a reader's failure is
	// the daemon's.
	fake.flows = nil
	if got, err := svc.Activity(ctx, activity.Query{}); err != nil || got == nil || len(got) != 0 {
		t.Errorf("no flows: %#v %v", got, err)
	}
	fake.err = errors.New("read /var/lib/extranet/activity/flows.jsonl: input/output error")
	_, err = svc.Activity(ctx, activity.Query{})
	wantCode(t, "reader fails", err, api.CodeInternal, "input/output error")
}

// TestActivityOfARecreatedOrganisation: the sponsor of an organisation
// made under the name of a deleted one reads what its own partners did,
// not what the deleted one's did, which stays in the log for its
// retention; an admin reads both.
func TestActivityOfARecreatedOrganisation(t *testing.T) {
	svc, clk, _ := newTestService(t)
	fake := &fakeActivity{}
	svc.opts.Activity = fake
	ctx := WithActor(context.Background(), "root")
	if _, err := svc.CreateOrg(ctx, api.CreateOrgRequest{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	made := clk.Now()
	old := api.Flow{Org: "acme", Peer: "acme/laptop", Closed: made.Add(-time.Hour), End: api.FlowClosed}
	mine := api.Flow{Org: "acme", Peer: "acme/phone", Closed: made.Add(time.Minute), End: api.FlowClosed}
	fake.flows = []api.Flow{old, mine}
	if got, err := svc.Activity(WithActor(ctx, "alice"), activity.Query{Orgs: []string{"acme"}}); err != nil || len(got) != 1 || got[0] != mine {
		t.Errorf("the sponsor of the new acme reads %+v, %v; want its own flow only", got, err)
	}
	if got, err := svc.Activity(ctx, activity.Query{}); err != nil || len(got) != 2 {
		t.Errorf("an admin reads %+v, %v; want both", got, err)
	}
	// What top adds up is what the caller may read, whole.
	fake.flows = []api.Flow{old, mine}
	sponsor := WithActor(ctx, "alice")
	if top, err := svc.ActivityTop(sponsor, activity.Query{Orgs: []string{"acme"}}, 10); err != nil || top.Records != 1 || len(top.Peers) != 1 || top.Peers[0].Peer != "acme/phone" {
		t.Errorf("the sponsor's top: %+v, %v; want its own peer only", top, err)
	}
	if top, err := svc.ActivityTop(ctx, activity.Query{}, 10); err != nil || top.Records != 2 {
		t.Errorf("an admin's top: %+v, %v; want both records", top, err)
	}
	_, err := svc.ActivityTop(sponsor, activity.Query{Orgs: []string{"acme"}, Peer: "globex/laptop"}, 10)
	wantCode(t, "top of another organisation", err, api.CodeForbidden, "alice may not read the activity of organisation globex")
}
