package httpapi

import (
	"bytes"
	"net/http/httptest"
	"testing"

	"github.com/extranetgw/extranet/pkg/api"
)

// FuzzDecodeRequest: any body decodes into a request or a clear API error,
// never a panic, and never a success with trailing data.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{`{"name":"acme","grants":["10.0.0.0/8"]}`, `{"name":1}`, `{}{}`, `[`, ``, `{"grantz":[]}`, `{"name":"a\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{&api.CreateOrgRequest{}, &api.IssuePeerRequest{}, &api.GrantsRequest{}, &api.ExpireRequest{}} {
			r := httptest.NewRequest("POST", "/v1/x", bytes.NewReader(body))
			err := decode(r, v)
			if err == nil {
				continue
			}
			if _, ok := err.(*api.Error); !ok {
				t.Fatalf("decode error is not an API error: %T %v", err, err)
			}
		}
	})
}
