package runs

import (
	"strings"
	"testing"
)

func TestResolveCollectiveAddr(t *testing.T) {
	for _, tc := range []struct {
		in, host string
		port     int
		err      string
	}{
		{"", "127.0.0.1", 0, ""},
		{"10.0.0.5", "10.0.0.5", 0, ""},
		{"10.0.0.5:29500", "10.0.0.5", 29500, ""},
		{"node-a.internal:0", "node-a.internal", 0, ""},
		{"lo", "127.0.0.1", 0, ""}, // an interface: its IPv4 address
		{":29500", "", 0, "name the host"},
		{"0.0.0.0", "", 0, "not every network"},
		{"10.0.0.5:http", "", 0, "is not a number"},
	} {
		host, port, err := ResolveCollectiveAddr(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one saying %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("%q = %q, %d, %v; want %q, %d", tc.in, host, port, err, tc.host, tc.port)
		}
	}
}
