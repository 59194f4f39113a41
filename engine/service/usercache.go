package service

import (
	"container/list"
	"context"
	"sync"
)

// DefaultUserCacheSize is Options.UserCacheSize's default: the number of
// users whose decoded records replica scope keeps in memory. A realistic
// record (bench-engine-scale's) takes about 2.5 KiB of heap decoded, so
// 50,000 entries hold about 120 MiB: the active users of a large program,
// with room within a 1 GiB engine for the garbage collector's headroom,
// the aggregate refresh's pass and requests. A miss costs one store read
// and a decode (tens of µs on bbolt), so the size bounds memory, not the
// latency targets; a program with more active users than this still
// works, each extra user's request reading the store.
const DefaultUserCacheSize = 50_000

// userEntry is one user's record in replica scope, where this process
// owns the store; its mutex serialises the user's operations. The record
// is always the stored one (clean): commit writes the store first and
// only then the entry, so evicting an entry never loses a write.
type userEntry struct {
	// Guarded by mu.
	mu      sync.Mutex
	loaded  bool // rec and version are the store's (rec nil: no such user)
	rec     *Record
	version int64

	// Guarded by userCache.mu.
	key  string
	pins int // operations holding the entry; a pinned entry is never evicted
	elem *list.Element
}

// userCache is a bounded LRU of user entries. Every operation pins the
// entries it uses before locking them and unpins them after unlocking,
// so one user never has two entries at once: an entry is evicted or
// dropped only while no operation holds it, and the next one loads the
// user from the store afresh.
type userCache struct {
	mu      sync.Mutex
	max     int
	entries map[string]*userEntry
	lru     list.List // of *userEntry, most recently pinned first
}

func newUserCache(size int) *userCache {
	c := &userCache{max: size, entries: map[string]*userEntry{}}
	c.lru.Init()
	return c
}

// pin returns the user's entry (a new, unloaded one when not cached),
// pinned, and evicts beyond the size (pinned entries may keep the cache
// above it until they are unpinned).
func (c *userCache) pin(key string) *userEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	if e == nil {
		e = &userEntry{key: key}
		e.elem = c.lru.PushFront(e)
		c.entries[key] = e
	} else {
		c.lru.MoveToFront(e.elem)
	}
	e.pins++
	c.evict()
	return e
}

// evict removes the least recently used unpinned entries beyond the size.
func (c *userCache) evict() {
	for el := c.lru.Back(); len(c.entries) > c.max && el != nil; {
		victim := el.Value.(*userEntry)
		el = el.Prev()
		if victim.pins == 0 {
			c.remove(victim)
		}
	}
}

// unpin releases an entry pinned by pin, after its mutex is unlocked. An
// unpinned entry that holds no user (absent, erased, or its load failed)
// is dropped: unknown users do not fill the cache. Reading e.rec here is
// safe: its last writer held the entry pinned and unpinned it under c.mu.
func (c *userCache) unpin(e *userEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.pins--
	if e.pins == 0 && e.rec == nil && c.entries[e.key] == e {
		c.remove(e)
	}
	// An operation on more users than the size kept them all meanwhile.
	c.evict()
}

func (c *userCache) remove(e *userEntry) {
	delete(c.entries, e.key)
	c.lru.Remove(e.elem)
}

// len is the number of cached entries.
func (c *userCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// lockUsers pins and locks the users' entries in the order of keys
// (sorted and unique, so two operations never deadlock) and loads those
// not cached from the store in one read. The caller unlocks them with
// unlockUsers.
func (s *Service) lockUsers(ctx context.Context, keys []string) (map[string]*userEntry, error) {
	entries := make(map[string]*userEntry, len(keys))
	var missing []string
	for _, key := range keys {
		e := s.users.pin(key)
		e.mu.Lock()
		entries[key] = e
		if !e.loaded {
			missing = append(missing, key)
		}
	}
	if len(missing) == 0 {
		return entries, nil
	}
	items, err := s.store.Users(ctx, missing)
	if err != nil {
		s.unlockUsers(entries)
		return nil, err
	}
	for _, key := range missing {
		e := entries[key]
		e.rec, e.version = nil, 0
		if item, ok := items[key]; ok {
			rec, err := decodeRecord(item.Value)
			if err != nil {
				s.unlockUsers(entries)
				return nil, err
			}
			e.rec, e.version = rec, item.Version
		}
		e.loaded = true
	}
	return entries, nil
}

// unlockUsers unlocks and unpins entries locked by lockUsers.
func (s *Service) unlockUsers(entries map[string]*userEntry) {
	for _, e := range entries {
		e.mu.Unlock()
		s.users.unpin(e)
	}
}

// CachedUsers is the number of users whose records the replica-scope
// cache holds now (0 on a shared store).
func (s *Service) CachedUsers() int {
	if s.users == nil {
		return 0
	}
	return s.users.len()
}
