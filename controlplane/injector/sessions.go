package injector

import (
	"context"
	"fmt"
	"path"

	"github.com/attestmesh/attestmesh/attest/attestapi"
	"github.com/attestmesh/attestmesh/controlplane/session"
)

// SessionLookup returns the current session with the given name, or an error wrapping
// ErrUnknownConfigID when there is none. It must be safe for concurrent use.
type SessionLookup func(ctx context.Context, name string) (*session.Session, error)

// SessionDirs implements Sessions over parsed sessions: the directories of the injection
// files of the image that the service names (image_name).
type SessionDirs SessionLookup

// InjectionDirs implements Sessions.
func (f SessionDirs) InjectionDirs(ctx context.Context, configID string) ([]string, error) {
	name, service, err := attestapi.SplitConfigID(configID)
	ok := err == nil
	if !ok {
		return nil, fmt.Errorf("injector: config ID %q is not SESSION/SERVICE: %w", configID, ErrUnknownConfigID)
	}
	s, err := f(ctx, name)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("injector: no session %q: %w", name, ErrUnknownConfigID)
	}
	return InjectionDirs(s, service)
}

// InjectionDirs returns the directories of the injection files of the service's image.
func InjectionDirs(s *session.Session, service string) ([]string, error) {
	svc, ok := s.Service(service)
	if !ok {
		return nil, fmt.Errorf("injector: session %q has no service %q: %w", s.Name, service, ErrUnknownConfigID)
	}
	if svc.ImageName == "" {
		return nil, nil
	}
	img, ok := s.Image(svc.ImageName)
	if !ok {
		return nil, fmt.Errorf("injector: session %q: service %q names image %q, which the session does not define", s.Name, service, svc.ImageName)
	}
	var dirs []string
	for _, f := range img.InjectionFiles {
		dirs = append(dirs, path.Dir(f.Path))
	}
	return dirs, nil
}
