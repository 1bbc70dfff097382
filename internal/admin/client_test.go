package admin

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/matryer/is"
)

// serve runs a's handler on a loopback HTTP server.
func (a *api) serve() *httptest.Server {
	srv := httptest.NewServer(a.h)
	a.t.Cleanup(srv.Close)
	return srv
}

func TestClientRoundTrip(t *testing.T) {
	is := is.New(t)
	a := newAPI(t, testToken)
	c := &Client{URL: a.serve().URL + "/", Token: testToken}
	ctx := context.Background()

	b, err := c.AddBan(ctx, BanRequest{Prefix: "192.0.2.9/24", For: "2h", Reason: "scan"})
	is.NoErr(err)
	is.Equal(b.Prefix, netip.MustParsePrefix("192.0.2.0/24"))
	is.Equal(b.Creator, "admin@relay-a")
	is.True(b.Expires.Equal(a.clock.Now().Add(2 * time.Hour)))
	_, err = c.AddBan(ctx, BanRequest{Prefix: "2001:db8::/32", Creator: "ops"})
	is.NoErr(err)

	bans, err := c.Bans(ctx)
	is.NoErr(err)
	is.Equal(len(bans), 2)
	is.Equal(bans[0].Reason, "scan")
	is.Equal(bans[1].Prefix, netip.MustParsePrefix("2001:db8::/32"))
	is.Equal(bans[1].Creator, "ops")
	is.True(bans[1].Expires.IsZero())

	for _, p := range []string{"192.0.2.0/24", "2001:db8::/32"} {
		removed, err := c.RemoveBan(ctx, netip.MustParsePrefix(p))
		is.NoErr(err)
		is.True(removed) // p
	}
	removed, err := c.RemoveBan(ctx, netip.MustParsePrefix("192.0.2.0/24"))
	is.NoErr(err)
	is.True(!removed) // gone already
	bans, err = c.Bans(ctx)
	is.NoErr(err)
	is.Equal(len(bans), 0)
}

func TestClientErrors(t *testing.T) {
	a := newAPI(t, testToken)
	srv := a.serve()
	noAPI := httptest.NewServer(http.NotFoundHandler()) // a server without the API
	t.Cleanup(noAPI.Close)
	tests := []struct {
		name   string
		c      *Client
		call   func(c *Client) error
		status int
		field  string
	}{
		{name: "bad prefix", c: &Client{URL: srv.URL, Token: testToken}, status: 400, field: "prefix",
			call: func(c *Client) error {
				_, err := c.AddBan(context.Background(), BanRequest{Prefix: "nope"})
				return err
			}},
		{name: "bad duration", c: &Client{URL: srv.URL, Token: testToken}, status: 400, field: "for",
			call: func(c *Client) error {
				_, err := c.AddBan(context.Background(), BanRequest{Prefix: "192.0.2.1", For: "1y"})
				return err
			}},
		{name: "wrong token", c: &Client{URL: srv.URL, Token: "wrong"}, status: 401,
			call: func(c *Client) error { _, err := c.Bans(context.Background()); return err }},
		{name: "no API: a 404 is not a missing ban", c: &Client{URL: noAPI.URL, Token: testToken}, status: 404,
			call: func(c *Client) error {
				_, err := c.RemoveBan(context.Background(), netip.MustParsePrefix("192.0.2.1/32"))
				return err
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			err := tc.call(tc.c)
			var e *APIError
			is.True(errors.As(err, &e))
			is.Equal(e.Status, tc.status)
			is.Equal(e.Field, tc.field)
			is.True(e.Message != "")
		})
	}
}
