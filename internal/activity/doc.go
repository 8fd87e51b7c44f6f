// Package activity keeps the log of what partners did through the gateway:
// one api.Flow per connection, as JSON lines in files under the state
// directory, rotated by size and age and dropped by age, and read back with
// filters for `extranetctl activity`.
//
// The directory is 0700 and its files 0600: flows name partners and what
// they reach. flows.jsonl is the current file; a rotation renames it to
// flows-<UTC time of the rotation>.jsonl, names that sort in the order they
// were made, and sets the rotated file's mtime to its newest record's
// Closed, so that retention and Read's Since skip whole files without
// reading them. Each record is one write of one line, so a crash tears at
// most the last line; Read skips and counts such lines, and the next Open
// starts after them. Read opens its files under the lock and parses them
// after it, so a slow query does not hold up Append.
package activity
