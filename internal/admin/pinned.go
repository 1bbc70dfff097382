package admin

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
)

// PinnedHTTP returns an HTTP client that speaks TLS to the admin listener
// and trusts exactly the certificate in certFile ([admin] tls_cert): the
// listener's own certificate, whatever its names and issuer, so that the
// command line reaches 127.0.0.1 through a self-signed certificate or one
// made for the relay's public name. Any other certificate is refused.
func PinnedHTTP(certFile string) (*http.Client, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read the admin certificate: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", certFile)
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	want := block.Bytes
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain and names are not checked: VerifyConnection checks
		// that the server shows the very certificate configured.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, want) {
				return errors.New("the admin listener's certificate is not the one in [admin] tls_cert")
			}
			return nil
		},
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Transport: tr, Timeout: DefaultTimeout}, nil
}
