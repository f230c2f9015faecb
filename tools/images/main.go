// Command images assembles iotfabric's multi-platform OCI images from the static binaries
// `make release` put in dist/bin, without a container daemon (go-containerregistry).
//
//	go run . --dist ../../dist --version 1.2.3 --commit REV --date 2026-11-28T10:00:00Z
//
// For each image (controller, vrouter-agent, iqrf-collector) it writes an OCI image layout,
// dist/images/NAME/, holding one index with a manifest per platform (linux/amd64,
// linux/arm64, linux/arm/v7), and the same layout as an OCI archive,
// dist/images/iotfabric-NAME-VERSION.oci.tar (skopeo oci-archive:, ctr images import).
//
// Each image has two layers: a distroless-like base (/etc/passwd and /etc/group with root
// and nonroot 65532, /etc/nsswitch.conf, the CA bundle, /tmp) and the binaries. Layers
// are built in memory with sorted entries, owner 0 and the commit's date as every time
// stamp, so two runs on one commit give the same digests.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// nonroot is the uid and gid of the unprivileged user (as in distroless images).
const nonroot = 65532

type platform struct {
	dir     string // dist/bin/linux-DIR
	arch    string
	variant string
}

var platforms = []platform{{"amd64", "amd64", ""}, {"arm64", "arm64", ""}, {"armv7", "arm", "v7"}}

// file is one entry of a layer; binaries are read from dist/bin/linux-PLATFORM/src.
type file struct {
	path string // in the image, without the leading slash
	src  string // binary name in dist/bin/linux-*/, or "" for data
	data []byte
	mode int64
	link string // symbolic link target
}

// image is one of the images built.
type image struct {
	name        string
	title       string
	description string
	files       []file
	entrypoint  []string
	user        string
}

var images = []image{
	{name: "controller", title: "iotfabric controller",
		description: "iotfabric controller (gRPC API, store, IPAM, BGP/MPLS VPN speaker) and iotfabricctl",
		files:       []file{{path: "usr/bin/controller", src: "controller", mode: 0o755}, {path: "usr/bin/iotfabricctl", src: "iotfabricctl", mode: 0o755}},
		// State: mount a volume on /var/lib/iotfabric (owned by 65532) or use etcd.
		entrypoint: []string{"/usr/bin/controller", "--data-dir", "/var/lib/iotfabric"}, user: "65532:65532"},
	{name: "vrouter-agent", title: "iotfabric vrouter agent",
		description: "iotfabric gateway agent (kernel data plane, CNI server) with the CNI plugin for an install-cni init container",
		files:       []file{{path: "usr/bin/vrouter-agent", src: "vrouter-agent", mode: 0o755}, {path: "opt/cni/bin/iotfabric", src: "cni-plugin", mode: 0o755}},
		// The agent programs the host's network stack: it needs root (or CAP_NET_ADMIN and
		// CAP_SYS_ADMIN) and the host network namespace.
		entrypoint: []string{"/usr/bin/vrouter-agent"}, user: "0:0"},
	{name: "iqrf-collector", title: "iotfabric IQRF collector",
		description: "IQRF DPA sensor collector to Graphite and MQTT",
		files:       []file{{path: "usr/bin/iqrf-collector", src: "iqrf-collector", mode: 0o755}},
		// The coordinator's device must be readable by 65532 (or add its group).
		entrypoint: []string{"/usr/bin/iqrf-collector", "--buffer-dir", "/var/lib/iotfabric/iqrf-collector"}, user: "65532:65532"},
}

func main() {
	var (
		dist    = flag.String("dist", "dist", "directory holding bin/linux-{amd64,arm64,armv7}; images go to DIST/images")
		version = flag.String("version", "", "release version (required)")
		commit  = flag.String("commit", "", "git revision (required)")
		date    = flag.String("date", "", "commit date, RFC 3339; every time stamp in the images (required)")
		repo    = flag.String("repo", "ghcr.io/iotfabric", "repository prefix of the image names (ctr and docker import them as REPO/NAME:VERSION)")
		source  = flag.String("source", "https://github.com/iotfabric/iotfabric", "org.opencontainers.image.source")
		license = flag.String("license", "", "org.opencontainers.image.licenses, an SPDX expression (required; make images passes packaging/LICENSE-ID)")
		certs   = flag.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "CA certificates to put in /etc/ssl/certs")
	)
	flag.Parse()
	if *version == "" || *commit == "" || *date == "" || *license == "" {
		fmt.Fprintln(os.Stderr, "images: --version, --commit, --date and --license are required")
		os.Exit(2)
	}
	created, err := time.Parse(time.RFC3339, *date)
	if err != nil {
		fmt.Fprintf(os.Stderr, "images: --date: %v\n", err)
		os.Exit(2)
	}
	ca, err := os.ReadFile(*certs)
	if err != nil {
		fmt.Fprintf(os.Stderr, "images: %v (Debian package ca-certificates)\n", err)
		os.Exit(1)
	}
	b := builder{dist: *dist, version: *version, commit: *commit, created: created, repo: *repo,
		source: *source, license: *license, ca: ca}
	for _, im := range images {
		if err := b.build(im); err != nil {
			fmt.Fprintf(os.Stderr, "images: %s: %v\n", im.name, err)
			os.Exit(1)
		}
	}
}

type builder struct {
	dist, version, commit, repo, source, license string
	created                                      time.Time
	ca                                           []byte
}

func (b builder) labels(im image) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       im.title,
		"org.opencontainers.image.description": im.description,
		"org.opencontainers.image.version":     b.version,
		"org.opencontainers.image.revision":    b.commit,
		"org.opencontainers.image.created":     b.created.UTC().Format(time.RFC3339),
		"org.opencontainers.image.source":      b.source,
		"org.opencontainers.image.url":         b.source,
		"org.opencontainers.image.licenses":    b.license,
		"org.opencontainers.image.vendor":      "iotfabric",
	}
}

// build writes the layout and the archive of one image.
func (b builder) build(im image) error {
	ref := b.repo + "/" + im.name + ":" + b.version
	base, err := b.layer(b.baseFiles(), "")
	if err != nil {
		return err
	}
	var idx v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		bins, err := b.layer(im.files, filepath.Join(b.dist, "bin", "linux-"+p.dir))
		if err != nil {
			return err
		}
		img, err := b.platformImage(im, p, base, bins)
		if err != nil {
			return err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: p.arch, Variant: p.variant}}})
	}
	idx = mutate.Annotations(idx, b.labels(im)).(v1.ImageIndex)

	dir := filepath.Join(b.dist, "images", im.name)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	// ref.name is the tag (OCI); io.containerd.image.name the whole name for ctr import.
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": b.version,
		"io.containerd.image.name":          ref,
	})); err != nil {
		return err
	}
	archive := filepath.Join(b.dist, "images", "iotfabric-"+im.name+"-"+b.version+".oci.tar")
	if err := b.tarDir(dir, archive); err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("images: %-14s %s %s (layout %s, archive %s)\n", im.name, ref, d, dir, archive)
	return nil
}

func (b builder) platformImage(im image, p platform, layers ...v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, l := range layers {
		var err error
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: types.OCILayer,
			History: v1.History{Created: v1.Time{Time: b.created}, CreatedBy: "iotfabric tools/images", Comment: im.name}}); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = "linux", p.arch, p.variant
	cf.Created = v1.Time{Time: b.created}
	cf.Author = "iotfabric"
	cf.Config.Entrypoint = im.entrypoint
	cf.Config.User = im.user
	cf.Config.WorkingDir = "/"
	cf.Config.Env = []string{"PATH=/usr/bin:/opt/cni/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cf.Config.Labels = b.labels(im)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return img, nil
}

// baseFiles are the distroless-like base: users, name service, CA certificates, /tmp.
func (b builder) baseFiles() []file {
	return []file{
		{path: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{path: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{path: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{path: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: b.ca},
		{path: "home/nonroot/", mode: 0o700},
		{path: "root/", mode: 0o700},
		{path: "tmp/", mode: 0o1777},
		{path: "var/lib/iotfabric/", mode: 0o755},
	}
}

// layer builds an uncompressed-then-gzipped layer from files, reading binaries from bindir.
func (b builder) layer(files []file, bindir string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	seen := map[string]bool{}
	var all []file
	for _, f := range files {
		// Parent directories first, 0755 root.
		parts := strings.Split(strings.TrimSuffix(f.path, "/"), "/")
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/") + "/"
			if !seen[d] {
				seen[d] = true
				all = append(all, file{path: d, mode: 0o755})
			}
		}
		if !seen[f.path] {
			seen[f.path] = true
			all = append(all, f)
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].path < all[j].path })
	for _, f := range all {
		h := &tar.Header{Name: f.path, Mode: f.mode, ModTime: b.created, Format: tar.FormatPAX}
		if f.path == "home/nonroot/" {
			h.Uid, h.Gid = nonroot, nonroot
		}
		data := f.data
		switch {
		case strings.HasSuffix(f.path, "/"):
			h.Typeflag = tar.TypeDir
		case f.link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.link
		default:
			if f.src != "" {
				var err error
				if data, err = os.ReadFile(filepath.Join(bindir, f.src)); err != nil {
					return nil, fmt.Errorf("%w (run make release first)", err)
				}
			}
			h.Typeflag, h.Size = tar.TypeReg, int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// tarDir writes dir as a tar archive (an OCI archive when dir is an OCI layout), entries
// sorted, owner 0, time stamps the commit's.
func (b builder) tarDir(dir, out string) error {
	var paths []string
	if err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil && p != dir {
			paths = append(paths, p)
		}
		return err
	}); err != nil {
		return err
	}
	sort.Strings(paths)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: b.created, Mode: 0o644, Format: tar.FormatPAX}
		if fi.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		h.Typeflag, h.Size = tar.TypeReg, int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
