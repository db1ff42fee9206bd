package testenv

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"klassenfunk/server"
)

// Test networks of the GeoIP database GeoIP writes by default. They are
// documentation ranges (RFC 5737, RFC 3849): no traffic goes there, the
// addresses only travel in X-Forwarded-For.
var GeoIPNetworks = map[string]string{
	"203.0.113.0/24":   "DE",
	"198.51.100.0/24":  "FR",
	"2001:db8:1::/48":  "AT",
	"2001:db8:99::/48": "US",
}

// GeoIP writes a MaxMind-format country database that locates each network
// of nets (CIDR → ISO code; nil: GeoIPNetworks) in a temporary directory
// and returns its path.
func GeoIP(t testing.TB, nets map[string]string) string {
	t.Helper()
	if nets == nil {
		nets = GeoIPNetworks
	}
	w, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            "Klassenfunk-Test-Country",
		IncludeReservedNetworks: true,
		RecordSize:              24,
	})
	if err != nil {
		t.Fatalf("mmdbwriter: %v", err)
	}
	for cidr, code := range nets {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatalf("GeoIP network %q: %v", cidr, err)
		}
		rec := mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String(code)}}
		if err := w.Insert(n, rec); err != nil {
			t.Fatalf("GeoIP insert %s: %v", cidr, err)
		}
	}
	path := filepath.Join(t.TempDir(), "country.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(f); err != nil {
		t.Fatalf("GeoIP write: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// WithGeoIP configures the node with the GeoIP database at path and trusts
// X-Forwarded-For from loopback, so that a test presents any client
// address with the header.
func WithGeoIP(path string) Option {
	return func(c *server.Config) {
		c.GeoIPDB = path
		c.TrustedProxies = append(c.TrustedProxies, "127.0.0.1/32", "::1/128")
	}
}
