//go:build !linux

package storage

const trimSupported = false

func trimMapped(string) {}
