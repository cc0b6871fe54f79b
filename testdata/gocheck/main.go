// Command gocheck walks a container layer (gzip, possibly multi-member, or plain tar) with
// Go's archive/tar and prints, as JSON, the TOC fields a SOCI zTOC records for it (SPEC §1.3,
// §3). It is an independent oracle for soci-ztoc's tar semantics: see
// soci-ztoc/tests/go_crosscheck.rs. Standard library only.
//
// usage: gocheck LAYER_FILE
//
// Byte strings (names, link targets, user/group names, PAX keys and values) may be
// non-UTF-8, so they are emitted as standard base64.
package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// countingReader counts the bytes of the uncompressed stream handed to the tar reader.
// It deliberately implements only io.Reader: archive/tar then skips content by reading it,
// so the count is exactly what the reader consumed.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type entry struct {
	Name               string      `json:"name"`
	Type               string      `json:"type"`
	UncompressedOffset int64       `json:"uncompressed_offset"`
	Size               int64       `json:"size"`
	Linkname           string      `json:"linkname"`
	Mode               int64       `json:"mode"`
	UID                uint32      `json:"uid"`
	GID                uint32      `json:"gid"`
	Uname              string      `json:"uname"`
	Gname              string      `json:"gname"`
	ModTime            string      `json:"mod_time"`
	Devmajor           int64       `json:"devmajor"`
	Devminor           int64       `json:"devminor"`
	Xattrs             [][2]string `json:"xattrs"`
}

type output struct {
	UncompressedArchiveSize int64   `json:"uncompressed_archive_size"`
	Entries                 []entry `json:"entries"`
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// entryType maps a type flag to the zTOC type string (SPEC §3.3).
func entryType(hdr *tar.Header) (string, error) {
	switch hdr.Typeflag {
	case '0':
		return "reg", nil
	case 0: // legacy regular file; a trailing slash marks a directory
		if strings.HasSuffix(hdr.Name, "/") {
			return "dir", nil
		}
		return "reg", nil
	case '1':
		return "hardlink", nil
	case '2':
		return "symlink", nil
	case '3':
		return "char", nil
	case '4':
		return "block", nil
	case '5':
		return "dir", nil
	case '6':
		return "fifo", nil
	}
	return "", fmt.Errorf("unsupported input tar entry '%c'", hdr.Typeflag)
}

// modTime formats like the reference: RFC 3339, nanoseconds with trailing zeros trimmed,
// in UTC; empty when the year cannot be written in four digits.
func modTime(hdr *tar.Header) string {
	t := hdr.ModTime.UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		return ""
	}
	return t.Format("2006-01-02T15:04:05.999999999Z07:00")
}

func run(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	var stream io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br) // multistream by default
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		stream = gz
	}
	counter := &countingReader{r: stream}
	tr := tar.NewReader(counter)
	out := output{Entries: []entry{}}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			out.UncompressedArchiveSize = counter.n
			break
		}
		if err != nil {
			return fmt.Errorf("tar at %d: %w", counter.n, err)
		}
		offset := counter.n
		typ, err := entryType(hdr)
		if err != nil {
			return err
		}
		keys := make([]string, 0, len(hdr.PAXRecords))
		for k := range hdr.PAXRecords {
			keys = append(keys, k)
		}
		sort.Strings(keys) // byte-wise order
		xattrs := make([][2]string, 0, len(keys))
		for _, k := range keys {
			xattrs = append(xattrs, [2]string{b64(k), b64(hdr.PAXRecords[k])})
		}
		out.Entries = append(out.Entries, entry{
			Name:               b64(hdr.Name),
			Type:               typ,
			UncompressedOffset: offset,
			Size:               hdr.Size,
			Linkname:           b64(hdr.Linkname),
			Mode:               hdr.Mode,
			UID:                uint32(hdr.Uid),
			GID:                uint32(hdr.Gid),
			Uname:              b64(hdr.Uname),
			Gname:              b64(hdr.Gname),
			ModTime:            modTime(hdr),
			Devmajor:           hdr.Devmajor,
			Devminor:           hdr.Devminor,
			Xattrs:             xattrs,
		})
	}
	w := bufio.NewWriter(os.Stdout)
	if err := json.NewEncoder(w).Encode(out); err != nil {
		return err
	}
	return w.Flush()
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gocheck LAYER_FILE")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "gocheck:", err)
		os.Exit(1)
	}
}
