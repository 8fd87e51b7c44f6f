// Package httpapi serves the versioned HTTP/JSON API on the daemon's unix
// socket. Handlers are thin adapters: they decode, name the caller from the
// socket's peer credentials, call the service and encode. Policy lives in
// the service.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/extranetgw/extranet/internal/authz"
	"github.com/extranetgw/extranet/internal/service"
	"github.com/extranetgw/extranet/pkg/api"
)

// MaxBody bounds every request body but an import's.
const MaxBody = 1 << 20

// MaxImportBody bounds an import: the export of a gateway with 100,000
// peers, about 10 MB of CSV, must be importable again.
const MaxImportBody = 16 << 20

// Server is the API server.
type Server struct {
	svc  *service.Service
	log  *slog.Logger
	http *http.Server
	mux  *http.ServeMux

	refusalsMu sync.Mutex
	refusals   map[string]refusal
}

// refusal is when a refusal was last audited, and how often it came again
// since.
type refusal struct {
	at      time.Time
	repeats int
}

// New builds the server and its routes.
func New(svc *service.Service, log *slog.Logger) *Server {
	s := &Server{svc: svc, log: log, mux: http.NewServeMux(), refusals: map[string]refusal{}}
	s.routes()
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       withPeerCred,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s
}

// ServeHTTP applies the checks every request gets, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/"+api.Version+"/") {
		writeError(w, api.Errorf(api.CodeNotFound, "unknown API path %q; this extranetd speaks /%s/ — upgrade extranetctl or extranetd so they match", r.URL.Path, api.Version))
		return
	}
	limit := int64(MaxBody)
	if r.URL.Path == "/"+api.Version+"/import" {
		limit = MaxImportBody
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	s.mux.ServeHTTP(w, r)
}

// Serve answers on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

type credKey struct{}

// peer is the kernel's account of who connected, which a client cannot
// forge: its uid and gid, and its supplementary groups.
type peer struct {
	cred   *unix.Ucred
	groups []uint32
}

// withPeerCred names the caller by the kernel's account of who connected.
func withPeerCred(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var p peer
	_ = raw.Control(func(fd uintptr) {
		p.cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		p.groups = peerGroups(int(fd))
	})
	if err != nil || p.cred == nil {
		return ctx
	}
	return context.WithValue(ctx, credKey{}, p)
}

// peerGroups returns the supplementary groups the connecting process had
// (SO_PEERGROUPS, Linux 4.13), nil when the kernel cannot say.
func peerGroups(fd int) []uint32 {
	buf := make([]uint32, 64)
	for range 3 {
		n := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case errno == 0:
			return buf[:n/4]
		case errno == unix.ERANGE:
			buf = make([]uint32, n/4+1)
		default:
			return nil
		}
	}
	return nil
}

// who is the caller with the roles it holds.
type who struct {
	caller authz.Caller
	grants authz.Grants
}

// caller names the caller from its peer credentials, with its groups from
// the host's group database, and works out its roles.
func (s *Server) caller(ctx context.Context) (who, error) {
	p, ok := ctx.Value(credKey{}).(peer)
	if !ok {
		return who{}, api.Errorf(api.CodeForbidden, "the caller's credentials are unknown")
	}
	c := authz.Caller{UID: p.cred.Uid, User: actorName(ctx)}
	// The groups the process had, as the kernel says; where it cannot,
	// the user's groups in the host's database.
	gids := []string{strconv.Itoa(int(p.cred.Gid))}
	for _, g := range p.groups {
		gids = append(gids, strconv.Itoa(int(g)))
	}
	if p.groups == nil {
		if u, err := user.LookupId(strconv.Itoa(int(p.cred.Uid))); err == nil {
			ids, _ := u.GroupIds()
			gids = append(gids, ids...)
		}
	}
	for _, id := range gids {
		if g, err := user.LookupGroupId(id); err == nil && !slices.Contains(c.Groups, g.Name) {
			c.Groups = append(c.Groups, g.Name)
		}
	}
	as, err := s.svc.Assignments()
	if err != nil {
		return who{}, api.Errorf(api.CodeInternal, "read role assignments: %v", err)
	}
	return who{caller: c, grants: authz.For(c, as)}, nil
}

// actorName is the caller's unix user name, or uid:N when it has none.
func actorName(ctx context.Context) string {
	p, ok := ctx.Value(credKey{}).(peer)
	if !ok {
		return "unknown"
	}
	uid := strconv.Itoa(int(p.cred.Uid))
	if u, err := user.LookupId(uid); err == nil {
		return u.Username
	}
	return "uid:" + uid
}

func (s *Server) withActor(r *http.Request) context.Context {
	actor := actorName(r.Context())
	// A scheduled job run by an admin account says so, so the log can tell
	// a person's change from cron's; the kernel-given user stays in front.
	if via := r.Header.Get("X-Extranet-Via"); via != "" && isWord(via) {
		actor = via + " (" + actor + ")"
	}
	return service.WithActor(r.Context(), actor)
}

func isWord(s string) bool {
	if len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c == '-') {
			return false
		}
	}
	return true
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors, so a typo in a client never silently does less than asked.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return api.Errorf(api.CodeTooLarge, "request body is over %d bytes", MaxBody)
		}
		if errors.Is(err, io.EOF) {
			return api.Errorf(api.CodeInvalid, "request body is empty; send a JSON object")
		}
		return api.Errorf(api.CodeInvalid, "request body is not valid: %v", err)
	}
	if dec.More() {
		return api.Errorf(api.CodeInvalid, "request body has data after the JSON object")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		ae = &api.Error{Code: api.CodeInternal, Message: err.Error()}
	}
	writeJSON(w, ae.HTTPStatus(), ae)
}

// reply writes v, or the error.
func reply(w http.ResponseWriter, status int, v any, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, status, v)
}

// Listen creates the unix socket safely: a live daemon on it is an error, a
// stale file is removed, and the socket is never reachable by others, even
// for an instant, before its mode is set. With a group, the socket is
// root:group 0660, and its directory, when it is the daemon's own, is
// root:group 0750, so that members can reach the socket and nobody else can
// even see it.
func Listen(path, group string, log *slog.Logger) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s is in use by a running extranetd; stop it first or choose another --socket", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	dir := dirOf(path)
	_, err := os.Lstat(dir)
	created := errors.Is(err, os.ErrNotExist)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			log.Warn("socket group not found; only root can use the socket", "group", group, "socket", path)
		} else if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("socket group %s has a non-numeric gid %q: %w", group, g.Gid, err)
		}
	}
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		if err := os.Chown(path, 0, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("chown socket %s to group %s: %w", path, group, err)
		}
		mode = 0o660
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket %s: %w", path, err)
	}
	if gid < 0 {
		return l, nil
	}
	// The directory is only changed when it is the daemon's own: the one
	// systemd made for it (RuntimeDirectory=, root:root with the unit's
	// mode, named in RUNTIME_DIRECTORY and removed when the service stops),
	// or one Listen has just created. Any other directory, such as /run or
	// /tmp for a --socket put there, is shared with other programs, and
	// handing it to the group would lock them out or let the group in.
	if created || isRuntimeDirectory(dir) {
		if err := shareDir(dir, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("hand socket directory to group %s: %w", group, err)
		}
	} else if !groupCanEnter(dir, gid) {
		log.Warn("the socket's directory is not open to the socket group; its members cannot reach the socket", "directory", dir, "group", group)
	}
	return l, nil
}

// isRuntimeDirectory tells whether dir is one systemd created for this
// service; RUNTIME_DIRECTORY lists them, separated by colons.
func isRuntimeDirectory(dir string) bool {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for _, rd := range strings.Split(os.Getenv("RUNTIME_DIRECTORY"), ":") {
		if rd != "" && filepath.Clean(rd) == abs {
			return true
		}
	}
	return false
}

// shareDir makes dir mode 0750 and group gid, keeping its owner (root
// under the unit). The mode goes first, so the directory is never open to
// more than the end result. Both go through one descriptor opened without
// following a symlink, so a link swapped in cannot redirect them.
func shareDir(dir string, gid int) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, 0o750); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	if err := unix.Fchown(fd, -1, gid); err != nil {
		return fmt.Errorf("chown %s: %w", dir, err)
	}
	return nil
}

// groupCanEnter tells whether members of gid may pass through dir, by its
// own mode; the directories above it are the admin's affair.
func groupCanEnter(dir string, gid int) bool {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return false
	}
	if st.Mode&0o001 != 0 {
		return true
	}
	return int(st.Gid) == gid && st.Mode&0o010 != 0
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i > 0 {
		return path[:i]
	}
	return "."
}
