// Command crdbtls judges certs-dirs the way CockroachDB's TLS stack does: it builds the tls.Config
// values CockroachDB builds from a --certs-dir, runs a real handshake between a server and a client
// over loopback in this one process, and then applies the identity check CockroachDB applies after
// the handshake. Standard library only, so that Debian's golang-go builds it offline.
//
// Every setting below names the CockroachDB source it mirrors (cockroachdb/cockroach, read through
// the project's reference summaries in /work/shared/reference and the stored copies of the files):
//
//   - pkg/security/tls.go: newServerTLSConfig, newUIServerTLSConfig, newClientTLSConfig,
//     newUIClientTLSConfig, newBaseTLSConfigWithCertificate, newBaseTLSConfig.
//   - pkg/security/certificate_manager.go: getEmbeddedServerTLSConfig, getEmbeddedUIServerTLSConfig,
//     GetClientTLSConfig (GetNodeClientTLSConfig in newer releases), GetUIClientTLSConfig and the
//     get*CertLocked helpers that pick each file and its fallback.
//   - pkg/rpc/auth.go: kvAuth.authenticateNetworkRequest, getClientCert, checkRootOrNodeInScope.
//   - pkg/security/auth.go: GetCertificateUserScope (forEachCertificateUserScope), UserAuthCertHook,
//     ValidateUserScope, IsTenantCertificate, FormatUserScopes.
//   - pkg/rpc/context.go: dialOptsNetworkCredentials hands the node client config to gRPC's
//     credentials.NewTLS, which sets ServerName to the host of the address dialled.
//
// Usage:
//
//	crdbtls check -kind rpc|sql|ui -server-dir DIR -client-dir DIR [-user U] [-cert-user U]
//	              [-server-name HOST] [-client-ca FILE] [-name NAME]
//	crdbtls batch < cases.json      (a JSON array of cases; one JSON line per case, in order)
//
// Each result is one JSON line: {"name", "ok", "error", "stage", "refused_by", "server_error",
// "client_error", "peer_identity", "client_sent_certificate"}. Errors are Go's own text, verbatim.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A case: which listener of which node, dialled by whom.
type testCase struct {
	Name string `json:"name"`
	// rpc: the node's RPC listener and its kvAuth check; sql: the same listener (CockroachDB serves
	// pgwire with the same server config) and the SQL certificate login; ui: the DB Console.
	Kind      string `json:"kind"`
	ServerDir string `json:"server_dir"`
	ClientDir string `json:"client_dir"`
	// rpc: empty for a node dialling a node, else the user whose client.<user>.crt a CLI presents
	// (`cockroach node status` as root). sql: the SQL user the client logs in as.
	User string `json:"user"`
	// sql: whose client.<cert_user>.crt is presented, when it is not the login user's own.
	CertUser string `json:"cert_user"`
	// The host the client dials; the server certificate must name it (Go checks SANs only).
	ServerName string `json:"server_name"`
	// ui: a trust file replacing ca-ui.crt/ca.crt, for a browser's trust store rather than
	// CockroachDB's own HTTPS client.
	ClientCA string `json:"client_ca"`
}

type result struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	// server-config, client-config, handshake, identity; empty when ok.
	Stage       string `json:"stage"`
	RefusedBy   string `json:"refused_by"`
	ServerError string `json:"server_error"`
	ClientError string `json:"client_error"`
	// rpc/sql: the principal the server accepted; ui: the CN of the certificate the console served.
	PeerIdentity          string `json:"peer_identity"`
	ClientSentCertificate bool   `json:"client_sent_certificate"`
}

// The server's own tenant: a KV node is the system tenant (roachpb.SystemTenantID, named "system").
const (
	systemTenantID   = 1
	systemTenantName = "system"
	// pkg/security/username: NodeUser, RootUser; pkg/security: TenantsOU.
	nodeUser  = "node"
	rootUser  = "root"
	tenantsOU = "Tenants"
)

var handshakeTimeout = 10 * time.Second

// readOptional reads a certs-dir file as CertificateLoader.Load does (os.ReadFile, links followed);
// a file that does not exist is nil, the "not found" the get*CertLocked helpers test for.
func readOptional(dir, name string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return data, err
}

func exists(dir, name string) bool {
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

// caPEM mirrors getCACertLocked: ca.crt is required by every config.
func caPEM(dir string) ([]byte, error) {
	data, err := readOptional(dir, "ca.crt")
	if err != nil {
		return nil, fmt.Errorf("problem with CA certificate: %w", err)
	}
	if data == nil {
		return nil, errors.New("problem with CA certificate: not found")
	}
	return data, nil
}

// pair reads <stem>.crt and <stem>.key (certnames.KeyForCert: the .crt suffix replaced by .key).
func pair(dir, stem, what string) (certPEM, keyPEM []byte, err error) {
	certPEM, err = readOptional(dir, stem+".crt")
	if err == nil && certPEM == nil {
		err = errors.New("not found")
	}
	if err == nil {
		keyPEM, err = os.ReadFile(filepath.Join(dir, stem+".key"))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("problem with %s: %w", what, err)
	}
	return certPEM, keyPEM, nil
}

// newBaseTLSConfig mirrors pkg/security/tls.go newBaseTLSConfig: RootCAs from the given CA file
// (nil: the system pool), CockroachDB's fixed cipher suites, TLS 1.2 at least. Its
// VerifyPeerCertificate is makeOCSPVerifier, which does nothing while security.ocsp.mode is off,
// CockroachDB's default; OCSP is judged elsewhere (vaultpki.core.ocsp against OpenBao).
func newBaseTLSConfig(ca []byte) (*tls.Config, error) {
	var pool *x509.CertPool
	if ca != nil {
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, errors.New("failed to parse PEM data to pool")
		}
	}
	return &tls.Config{
		RootCAs: pool,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,
			tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
			tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
			tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_RSA_WITH_AES_128_CBC_SHA,
			tls.TLS_RSA_WITH_AES_256_CBC_SHA,
		},
		MinVersion: tls.VersionTLS12,
	}, nil
}

// newBaseTLSConfigWithCertificate mirrors tls.go: tls.X509KeyPair takes the first CERTIFICATE block
// as the leaf, sends the rest as the chain, and fails on a key that does not match.
func newBaseTLSConfigWithCertificate(certPEM, keyPEM, ca []byte) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	cfg, err := newBaseTLSConfig(ca)
	if err != nil {
		return nil, err
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, nil
}

// serverTLSConfig is the RPC and SQL listener's config: certificate_manager.go
// getEmbeddedServerTLSConfig feeding tls.go newServerTLSConfig.
func serverTLSConfig(dir string) (*tls.Config, error) {
	ca, err := caPEM(dir)
	if err != nil {
		return nil, err
	}
	// getNodeCertLocked: the listener always serves node.crt.
	certPEM, keyPEM, err := pair(dir, "node", "node certificate")
	if err != nil {
		return nil, err
	}
	// getClientCACertLocked: ca-client.crt when present, else ca.crt. ca.crt is then NOT in the
	// client pool: every incoming client certificate, a node's included, must chain to ca-client.crt.
	clientCA := ca
	if exists(dir, "ca-client.crt") {
		if clientCA, err = readOptional(dir, "ca-client.crt"); err != nil {
			return nil, fmt.Errorf("problem with client CA certificate: %w", err)
		}
	}
	// getTenantClientCACertLocked: ca-client-tenant.crt when present, else the client CA again.
	tenantCA := clientCA
	if exists(dir, "ca-client-tenant.crt") {
		if tenantCA, err = readOptional(dir, "ca-client-tenant.crt"); err != nil {
			return nil, fmt.Errorf("problem with tenant client CA certificate: %w", err)
		}
	}
	cfg, err := newBaseTLSConfigWithCertificate(certPEM, keyPEM, ca)
	if err != nil {
		return nil, err
	}
	// newServerTLSConfig: a client certificate is verified when one is sent, and a connection
	// without one is let through the handshake; the authentication code refuses it afterwards.
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	pool := x509.NewCertPool()
	for _, pem := range [][]byte{clientCA, tenantCA} {
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("failed to parse client CA PEM data to pool")
		}
	}
	cfg.ClientCAs = pool
	return cfg, nil
}

// uiServerTLSConfig is the DB Console's config: getEmbeddedUIServerTLSConfig → getUICertLocked
// (ui.crt when present, else node.crt) → newUIServerTLSConfig, which asks for no client certificate.
func uiServerTLSConfig(dir string) (*tls.Config, error) {
	stem, what := "node", "node certificate"
	if exists(dir, "ui.crt") {
		stem, what = "ui", "UI certificate"
	}
	certPEM, keyPEM, err := pair(dir, stem, what)
	if err != nil {
		return nil, err
	}
	return newBaseTLSConfigWithCertificate(certPEM, keyPEM, nil)
}

// nodeClientTLSConfig is what a node dials other nodes with: GetClientTLSConfig(NodeUser)
// (GetNodeClientTLSConfig in newer releases) → getNodeClientCertLocked: client.node.crt when
// present, else the dual-purpose node.crt; RootCAs ca.crt (newClientTLSConfig).
func nodeClientTLSConfig(dir string) (*tls.Config, error) {
	ca, err := caPEM(dir)
	if err != nil {
		return nil, err
	}
	stem, what := "node", "node certificate"
	if exists(dir, "client.node.crt") {
		stem, what = "client.node", "node client certificate"
	}
	certPEM, keyPEM, err := pair(dir, stem, what)
	if err != nil {
		return nil, err
	}
	return newBaseTLSConfigWithCertificate(certPEM, keyPEM, ca)
}

// userClientTLSConfig is a CLI or SQL client acting as a user: GetClientTLSConfig(user) →
// getClientCertLocked (client.<user>.crt), RootCAs ca.crt. The node user takes the node's path.
func userClientTLSConfig(dir, user string) (*tls.Config, error) {
	if user == nodeUser {
		return nodeClientTLSConfig(dir)
	}
	ca, err := caPEM(dir)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := pair(dir, "client."+user, "client cert for user "+user)
	if err != nil {
		return nil, err
	}
	return newBaseTLSConfigWithCertificate(certPEM, keyPEM, ca)
}

// uiClientTLSConfig is CockroachDB's own HTTPS client for the console: GetUIClientTLSConfig →
// getUICACertLocked (ca-ui.crt when present, else ca.crt) → newUIClientTLSConfig, no certificate.
// override stands for a browser's trust store instead.
func uiClientTLSConfig(dir, override string) (*tls.Config, error) {
	var ca []byte
	var err error
	switch {
	case override != "":
		ca, err = os.ReadFile(override)
	case exists(dir, "ca-ui.crt"):
		ca, err = readOptional(dir, "ca-ui.crt")
		if err != nil {
			err = fmt.Errorf("problem with UI CA certificate: %w", err)
		}
	default:
		ca, err = caPEM(dir)
	}
	if err != nil {
		return nil, err
	}
	return newBaseTLSConfig(ca)
}

// A certificate's principals: pkg/security/auth.go CertificateUserScope.
type userScope struct {
	Username   string
	TenantID   uint64
	TenantName string
	Global     bool
}

// certificateUserScopes mirrors forEachCertificateUserScope: crdb:// URI SANs, when there are any,
// are the only principals (each scoped to a tenant); otherwise the CN and every DNS SAN are, each
// valid on all tenants. No --cert-principal-map is configured, so names are taken as they are.
func certificateUserScopes(cert *x509.Certificate) ([]userScope, error) {
	var scopes []userScope
	for _, uri := range cert.URIs {
		if uri.Scheme != "crdb" { // isCRDBSANURI
			continue
		}
		scope, err := parseCRDBURISAN(uri)
		if err != nil {
			return nil, err
		}
		scopes = append(scopes, scope)
	}
	if scopes != nil {
		return scopes, nil
	}
	scopes = append(scopes, userScope{Username: cert.Subject.CommonName, Global: true})
	for _, name := range cert.DNSNames {
		scopes = append(scopes, userScope{Username: name, Global: true})
	}
	return scopes, nil
}

// parseCRDBURISAN mirrors parseTenantURISAN ("crdb://tenant/<id>/user/<name>") and
// parseTenantNameURISAN ("crdb://tenant-name/<name>/user/<name>") of pkg/security/x509.go.
func parseCRDBURISAN(uri *url.URL) (userScope, error) {
	if uri.Host == "tenant-name" {
		parts := strings.Split(uri.Path, "/")
		if len(parts) != 4 {
			return userScope{}, fmt.Errorf("invalid tenant-name URI SAN %q", uri.String())
		}
		return userScope{TenantName: parts[1], Username: parts[3]}, nil
	}
	var id uint64
	var user string
	if _, err := fmt.Sscanf(uri.String(), "crdb://tenant/%d/user/%s", &id, &user); err != nil || id == 0 {
		return userScope{}, fmt.Errorf("invalid tenant URI SAN %s", uri.String())
	}
	return userScope{TenantID: id, Username: user}, nil
}

// formatUserScopes mirrors FormatUserScopes, for the same error texts.
func formatUserScopes(scopes []userScope) string {
	var parts []string
	for _, s := range scopes {
		where := "all tenants"
		if !s.Global {
			where = ""
			if s.TenantID != 0 {
				where += fmt.Sprintf("tenantID %d", s.TenantID)
			}
			if s.TenantName != "" {
				where += "tenantName " + s.TenantName
			}
		}
		parts = append(parts, fmt.Sprintf("%q on %s", s.Username, where))
	}
	return strings.Join(parts, ", ")
}

func isTenantCertificate(cert *x509.Certificate) bool {
	for _, ou := range cert.Subject.OrganizationalUnit {
		if ou == tenantsOU {
			return true
		}
	}
	return false
}

// rpcAuthenticate is what a KV node decides about an RPC peer once the handshake is done:
// pkg/rpc/auth.go kvAuth.authenticateNetworkRequest, without root/node DN flags (none are set).
func rpcAuthenticate(state tls.ConnectionState) (string, error) {
	// getClientCert: VerifyClientCertIfGiven let a peer without a certificate through; refused here.
	if len(state.PeerCertificates) == 0 {
		return "", errors.New("TLSInfo is not available in request context")
	}
	cert := state.PeerCertificates[0]
	if isTenantCertificate(cert) {
		// A SQL pod's client-tenant.<id>.crt: the CN must be its tenant ID.
		var id uint64
		if _, err := fmt.Sscanf(cert.Subject.CommonName, "%d", &id); err != nil || id == 0 {
			return "", fmt.Errorf("invalid tenant ID %q in Common Name (CN)", cert.Subject.CommonName)
		}
		return fmt.Sprintf("tenant %d", id), nil
	}
	scopes, err := certificateUserScopes(cert)
	if err != nil {
		return "", err
	}
	// checkRootOrNodeInScope: a global scope, or this server's tenant, naming node or root.
	for _, s := range scopes {
		if (s.Global || s.TenantID == systemTenantID) && (s.Username == nodeUser || s.Username == rootUser) {
			return s.Username, nil
		}
	}
	return "", fmt.Errorf("need root or node client cert to perform RPCs on this server (this is tenant %s; cert is valid for %s)",
		systemTenantName, formatUserScopes(scopes))
}

// sqlAuthenticate is the SQL certificate login of user: pkg/security/auth.go UserAuthCertHook and
// ValidateUserScope with no role subject, no SAN requirement, root login allowed (the defaults).
// The failure folds UserAuthCertHook's error detail into the one line.
func sqlAuthenticate(state tls.ConnectionState, user string) (string, error) {
	if len(state.PeerCertificates) == 0 {
		return "", errors.New("no client certificates in request")
	}
	if user == "" {
		return "", errors.New("user is missing")
	}
	cert := state.PeerCertificates[0]
	scopes, err := certificateUserScopes(cert)
	if err != nil {
		return "", err
	}
	if isTenantCertificate(cert) {
		return "", errors.New("using tenant client certificate as user certificate is not allowed")
	}
	for _, s := range scopes {
		if s.Username != user {
			continue
		}
		if s.Global || s.TenantID == systemTenantID || s.TenantName == systemTenantName {
			return user, nil
		}
	}
	return "", fmt.Errorf("certificate authentication failed for user %q: the client certificate is valid for %s",
		user, formatUserScopes(scopes))
}

type serverOutcome struct {
	err      error
	idErr    error
	identity string
	sentCert bool
}

func configs(c testCase) (server, client *tls.Config, stage string, err error) {
	switch c.Kind {
	case "rpc", "sql":
		server, err = serverTLSConfig(c.ServerDir)
	case "ui":
		server, err = uiServerTLSConfig(c.ServerDir)
	default:
		return nil, nil, "server-config", fmt.Errorf("unknown kind %q (rpc, sql, ui)", c.Kind)
	}
	if err != nil {
		return nil, nil, "server-config", err
	}
	switch {
	case c.Kind == "ui":
		client, err = uiClientTLSConfig(c.ClientDir, c.ClientCA)
	case c.Kind == "sql":
		certUser := c.CertUser
		if certUser == "" {
			certUser = c.User
		}
		client, err = userClientTLSConfig(c.ClientDir, certUser)
	case c.User != "":
		client, err = userClientTLSConfig(c.ClientDir, c.User)
	default:
		client, err = nodeClientTLSConfig(c.ClientDir)
	}
	if err != nil {
		return nil, nil, "client-config", err
	}
	// What gRPC (credentials.NewTLS) and a verify-full SQL driver put in ServerName: the host dialled.
	client.ServerName = c.ServerName
	return server, client, "", nil
}

func serve(ln net.Listener, cfg *tls.Config, c testCase, out chan<- serverOutcome) {
	conn, err := ln.Accept()
	if err != nil {
		out <- serverOutcome{err: err}
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	tc := tls.Server(conn, cfg)
	if err := tc.Handshake(); err != nil {
		out <- serverOutcome{err: err}
		return
	}
	state := tc.ConnectionState()
	o := serverOutcome{sentCert: len(state.PeerCertificates) > 0}
	switch c.Kind {
	case "rpc":
		o.identity, o.idErr = rpcAuthenticate(state)
	case "sql":
		o.identity, o.idErr = sqlAuthenticate(state, c.User)
	}
	// One byte of application data: the client's first read is where a TLS 1.3 client learns that
	// the server refused its certificate (its own handshake returns before the server has judged it).
	_, _ = tc.Write([]byte{'.'})
	out <- o
}

func isRemote(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "remote error:")
}

func run(c testCase) result {
	r := result{Name: c.Name}
	serverCfg, clientCfg, stage, err := configs(c)
	if err != nil {
		r.Stage, r.Error = stage, err.Error()
		r.RefusedBy = strings.TrimSuffix(stage, "-config")
		return r
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.Stage, r.Error = "listen", err.Error()
		return r
	}
	defer ln.Close()
	done := make(chan serverOutcome, 1)
	go serve(ln, serverCfg, c, done)

	var clientErr error
	var served string
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), handshakeTimeout)
	if err != nil {
		clientErr = err
	} else {
		_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
		tc := tls.Client(conn, clientCfg)
		clientErr = tc.Handshake()
		if clientErr == nil {
			if peers := tc.ConnectionState().PeerCertificates; len(peers) > 0 {
				served = peers[0].Subject.CommonName
			}
			if _, err := tc.Read(make([]byte, 1)); err != nil && err != io.EOF {
				clientErr = err
			}
		}
		tc.Close()
	}
	s := <-done
	r.ClientSentCertificate = s.sentCert
	if s.err != nil {
		r.ServerError = s.err.Error()
	}
	if clientErr != nil {
		r.ClientError = clientErr.Error()
	}
	// The side that refused reports the reason; the other side only hears "remote error: ...".
	switch {
	case s.err != nil && !isRemote(s.err):
		r.Stage, r.RefusedBy, r.Error = "handshake", "server", r.ServerError
	case clientErr != nil && !isRemote(clientErr):
		r.Stage, r.RefusedBy, r.Error = "handshake", "client", r.ClientError
	case s.err != nil || clientErr != nil:
		r.Stage, r.RefusedBy, r.Error = "handshake", "peer", r.ServerError+r.ClientError
	case s.idErr != nil:
		r.Stage, r.RefusedBy, r.Error = "identity", "server", s.idErr.Error()
	default:
		r.OK = true
		r.PeerIdentity = s.identity
		if c.Kind == "ui" {
			r.PeerIdentity = served
		}
	}
	return r
}

func emit(enc *json.Encoder, r result) {
	if err := enc.Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "crdbtls:", err)
		os.Exit(1)
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crdbtls check [flags] | crdbtls batch < cases.json")
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	switch os.Args[1] {
	case "check":
		var c testCase
		fs := flag.NewFlagSet("check", flag.ExitOnError)
		fs.StringVar(&c.Name, "name", "", "a name echoed in the result")
		fs.StringVar(&c.Kind, "kind", "rpc", "rpc, sql or ui")
		fs.StringVar(&c.ServerDir, "server-dir", "", "the serving node's certs-dir")
		fs.StringVar(&c.ClientDir, "client-dir", "", "the dialling side's certs-dir")
		fs.StringVar(&c.User, "user", "", "rpc: a user dialling instead of a node; sql: the login user")
		fs.StringVar(&c.CertUser, "cert-user", "", "sql: whose client.<user>.crt is presented")
		fs.StringVar(&c.ServerName, "server-name", "localhost", "the host dialled")
		fs.StringVar(&c.ClientCA, "client-ca", "", "ui: a browser's trust file instead of ca-ui.crt/ca.crt")
		_ = fs.Parse(os.Args[2:])
		emit(enc, run(c))
	case "batch":
		var cases []testCase
		if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
			fmt.Fprintln(os.Stderr, "crdbtls: reading cases:", err)
			os.Exit(2)
		}
		for _, c := range cases {
			emit(enc, run(c))
		}
	default:
		fmt.Fprintf(os.Stderr, "crdbtls: unknown mode %q (check, batch)\n", os.Args[1])
		os.Exit(2)
	}
}
