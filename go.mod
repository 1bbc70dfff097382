module github.com/smtp-interceptor/smtp-interceptor

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/gaissmai/bart v0.30.0
	github.com/hashicorp/go-multierror v1.1.1
	github.com/matryer/is v1.4.1
	github.com/miekg/dns v1.1.73
)

require (
	github.com/d--j/go-milter v0.10.1 // indirect
	github.com/emersion/go-message v0.18.2 // indirect
	github.com/emersion/go-msgauth v0.7.0 // indirect
	github.com/hashicorp/errwrap v1.0.0 // indirect
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.40.0 // indirect
)
