package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/state"
)

// DefaultTimeout bounds a Client's request when it has no HTTP client of
// its own.
const DefaultTimeout = 10 * time.Second

// maxAnswer bounds an answer the client reads (a list of many bans).
const maxAnswer = 64 << 20

// Client calls the admin API of a running server.
type Client struct {
	// URL is where the API is served, "http://127.0.0.1:10063"; the
	// routes are under it.
	URL string
	// Token is the bearer token ([admin] token_file).
	Token string
	// HTTP makes the requests; nil means a client with DefaultTimeout.
	HTTP *http.Client
}

// APIError is an answer of the API other than success.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Message is the answer's "error", or its status text.
	Message string
	// Field names the field of the request that was refused, if any.
	Field string
	// noBan is a DELETE's "removed": false, as opposed to a 404 of a
	// server without the API.
	noBan bool
}

// Error implements error.
func (e *APIError) Error() string {
	return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, http.StatusText(e.Status))
}

// Bans returns the bans in force.
func (c *Client) Bans(ctx context.Context) ([]state.Ban, error) {
	var bans []state.Ban
	if err := c.do(ctx, http.MethodGet, "/api/bans", nil, http.StatusOK, &bans); err != nil {
		return nil, err
	}
	return bans, nil
}

// AddBan asks for the ban req describes and returns it as the server
// stored it.
func (c *Client) AddBan(ctx context.Context, req BanRequest) (state.Ban, error) {
	js, err := json.Marshal(req)
	if err != nil {
		return state.Ban{}, fmt.Errorf("admin: encode ban request: %w", err)
	}
	var b state.Ban
	if err := c.do(ctx, http.MethodPost, "/api/bans", js, http.StatusCreated, &b); err != nil {
		return state.Ban{}, err
	}
	return b, nil
}

// RemoveBan removes the ban on exactly p and reports whether there was
// one.
func (c *Client) RemoveBan(ctx context.Context, p netip.Prefix) (bool, error) {
	err := c.do(ctx, http.MethodDelete, "/api/bans/"+url.PathEscape(p.String()), nil, http.StatusOK, nil)
	if e := (*APIError)(nil); errors.As(err, &e) && e.noBan {
		return false, nil
	}
	return err == nil, err
}

// do sends one request and decodes the answer into out (nil: ignored)
// when its status is want.
func (c *Client) do(ctx context.Context, method, path string, body []byte, want int, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	target := strings.TrimSuffix(c.URL, "/") + path
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return fmt.Errorf("admin: %s %s: %w", method, target, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: DefaultTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err // *url.Error: names the method and the URL
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("admin: %s %s: read the answer: %w", method, target, err)
	}
	if resp.StatusCode != want {
		e := &APIError{Status: resp.StatusCode}
		var doc struct {
			Error   string `json:"error"`
			Field   string `json:"field"`
			Removed *bool  `json:"removed"`
		}
		if json.Unmarshal(data, &doc) == nil && doc.Error != "" {
			e.Message, e.Field = doc.Error, doc.Field
			e.noBan = resp.StatusCode == http.StatusNotFound && doc.Removed != nil && !*doc.Removed
		} else if e.Message = strings.TrimSpace(string(data)); e.Message == "" || len(e.Message) > 200 {
			e.Message = method + " " + path + " answered"
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin: %s %s: decode the answer: %w", method, target, err)
	}
	return nil
}
