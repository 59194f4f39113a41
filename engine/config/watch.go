package config

import (
	"bytes"
	"context"
	"os"
	"time"
)

// Watch polls path every interval and calls onChange with each new valid
// configuration, or onError when the file changed but is invalid (the
// caller keeps the last good one). Polling the content, not watching inode
// events, follows the kubelet's atomic symlink swap of ConfigMap volumes
// without special cases. It returns when ctx ends.
func Watch(ctx context.Context, path string, interval time.Duration, last []byte, onChange func(*Config, []byte), onError func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(path)
		if err != nil {
			if !bytes.Equal(last, nil) {
				onError(err)
				last = nil
			}
			continue
		}
		if bytes.Equal(data, last) {
			continue
		}
		last = data
		cfg, err := Parse(data)
		if err != nil {
			onError(err)
			continue
		}
		onChange(cfg, data)
	}
}
