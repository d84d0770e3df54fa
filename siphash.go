package main

// SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF", INDOCRYPT 2012; reference
// implementation github.com/veorq/SipHash): the keyed 64-bit hash of the index's posting keys. Unlike
// hash/maphash, whose seeds cannot be saved, its key can go into a checkpoint, so the postings are
// saved with the index rather than rebuilt at every start; being a PRF under a random key, it keeps
// an attacker who can create Patients from choosing values whose keys collide.

import (
	"encoding/binary"
	"math/bits"
)

// sipKey is a SipHash key: its two little-endian halves.
type sipKey [2]uint64

// sipHash24 returns the SipHash-2-4 of m under k.
func sipHash24(k sipKey, m []byte) uint64 {
	v0, v1 := k[0]^0x736f6d6570736575, k[1]^0x646f72616e646f6d
	v2, v3 := k[0]^0x6c7967656e657261, k[1]^0x7465646279746573
	n := len(m)
	for ; len(m) >= 8; m = m[8:] {
		x := binary.LittleEndian.Uint64(m)
		v3 ^= x
		v0, v1, v2, v3 = sipRound(sipRound(v0, v1, v2, v3))
		v0 ^= x
	}
	var last [8]byte // the final block: the remaining bytes and the length's low byte
	copy(last[:], m)
	last[7] = byte(n)
	x := binary.LittleEndian.Uint64(last[:])
	v3 ^= x
	v0, v1, v2, v3 = sipRound(sipRound(v0, v1, v2, v3))
	v0 ^= x
	v2 ^= 0xff
	v0, v1, v2, v3 = sipRound(sipRound(sipRound(sipRound(v0, v1, v2, v3))))
	return v0 ^ v1 ^ v2 ^ v3
}

// sipRound is one SipRound.
func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13) ^ v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16) ^ v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21) ^ v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17) ^ v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}
