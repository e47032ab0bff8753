package auth

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Parameters of the hashes written by HashPassword and HashPasswordArgon2id.
// They are mosquitto 2.1's defaults, so files stay interchangeable.
const (
	// DefaultPBKDF2Iterations is mosquitto 2.1's iteration count for $7$.
	// (mosquitto 2.0 used 101.)
	DefaultPBKDF2Iterations = 1000
	// DefaultSaltLen is mosquitto 2.1's salt length. mosquitto 2.0 writes
	// and accepts only 12-byte salts; see HashPasswordPBKDF2.
	DefaultSaltLen = 64

	argon2Time    = 1
	argon2Memory  = 47104 // KiB, as mosquitto 2.1 (MOSQ_ARGON2_M)
	argon2Threads = 1
	argon2KeyLen  = 64
)

// Upper bounds on cost parameters read from a file. A password file is
// trusted configuration, but absurd values are almost certainly a typo and
// would turn every login into a denial of service.
const (
	maxPBKDF2Iterations = 10_000_000
	maxArgon2Memory     = 4 << 20 // KiB = 4 GiB
	maxArgon2Time       = 1 << 16
	maxHashBytes        = 1024
)

// sha512Size is the length of the derived key / digest in $6$ and $7$.
const sha512Size = sha512.Size

// verifier checks a password against one decoded hash.
type verifier interface {
	verify(password string) bool
}

// ValidateHash reports why encoded is not a supported password hash, or nil.
// Supported: mosquitto's $6$ (salted SHA-512) and $7$ (PBKDF2-SHA512),
// PHC-format $argon2id$ (mosquitto 2.1) and bcrypt ($2a$, $2b$, $2y$).
func ValidateHash(encoded string) error {
	_, err := parseHash(encoded)
	return err
}

// VerifyHash checks password against a single encoded hash in constant
// time with respect to the hash contents. It returns an error only when the
// hash cannot be decoded.
func VerifyHash(encoded, password string) (bool, error) {
	v, err := parseHash(encoded)
	if err != nil {
		return false, err
	}
	return v.verify(password), nil
}

func parseHash(encoded string) (verifier, error) {
	switch {
	case strings.HasPrefix(encoded, "$7$"):
		return parsePBKDF2(encoded)
	case strings.HasPrefix(encoded, "$6$"):
		return parseSHA512(encoded)
	case strings.HasPrefix(encoded, "$argon2id$"):
		return parseArgon2id(encoded)
	case strings.HasPrefix(encoded, "$2a$"), strings.HasPrefix(encoded, "$2b$"), strings.HasPrefix(encoded, "$2y$"):
		return parseBcrypt(encoded)
	case encoded == "":
		return nil, errors.New("empty password hash")
	case !strings.HasPrefix(encoded, "$"):
		// mosquitto_passwd -U converts such files; we refuse plain text
		// rather than silently accepting a password stored in clear.
		return nil, errors.New("password is not hashed (plain text is not supported; hash it with mosquitto_passwd -U or caddy mqtt passwd)")
	default:
		id, _, _ := strings.Cut(encoded[1:], "$")
		return nil, fmt.Errorf("unknown hash type %q (supported: $6$, $7$, $argon2id$, $2a$/$2b$/$2y$)", "$"+id+"$")
	}
}

// decodeB64 decodes mosquitto's standard base64, padded as mosquitto writes
// it; the unpadded form is accepted too because hand-edited files drop it.
func decodeB64(what, s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("empty %s", what)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, fmt.Errorf("bad base64 in %s: %v", what, err)
	}
	return b, nil
}

// --- $7$: PBKDF2-HMAC-SHA512 ---

type pbkdf2Hash struct {
	iterations int
	salt, hash []byte
}

func parsePBKDF2(encoded string) (verifier, error) {
	parts := strings.Split(encoded, "$") // "", "7", iterations, salt, hash
	if len(parts) != 5 {
		return nil, errors.New("malformed $7$ hash: want $7$<iterations>$<base64 salt>$<base64 hash>")
	}
	iter, err := strconv.Atoi(parts[2])
	if err != nil || iter < 1 || iter > maxPBKDF2Iterations {
		return nil, fmt.Errorf("bad $7$ iteration count %q: want an integer from 1 to %d", parts[2], maxPBKDF2Iterations)
	}
	salt, err := decodeB64("salt", parts[3])
	if err != nil {
		return nil, err
	}
	hash, err := decodeB64("hash", parts[4])
	if err != nil {
		return nil, err
	}
	if len(hash) != sha512Size {
		return nil, fmt.Errorf("$7$ hash is %d bytes, want %d", len(hash), sha512Size)
	}
	return &pbkdf2Hash{iterations: iter, salt: salt, hash: hash}, nil
}

func (h *pbkdf2Hash) verify(password string) bool {
	got, err := pbkdf2.Key(sha512.New, password, h.salt, h.iterations, sha512Size)
	return err == nil && subtle.ConstantTimeCompare(got, h.hash) == 1
}

// --- $6$: SHA-512(password || salt), mosquitto before 2.0 ---

type sha512Hash struct {
	salt, hash []byte
}

func parseSHA512(encoded string) (verifier, error) {
	parts := strings.Split(encoded, "$") // "", "6", salt, hash
	if len(parts) != 4 {
		return nil, errors.New("malformed $6$ hash: want $6$<base64 salt>$<base64 hash>")
	}
	salt, err := decodeB64("salt", parts[2])
	if err != nil {
		return nil, err
	}
	hash, err := decodeB64("hash", parts[3])
	if err != nil {
		return nil, err
	}
	if len(hash) != sha512Size {
		return nil, fmt.Errorf("$6$ hash is %d bytes, want %d", len(hash), sha512Size)
	}
	return &sha512Hash{salt: salt, hash: hash}, nil
}

func (h *sha512Hash) verify(password string) bool {
	d := sha512.New()
	d.Write([]byte(password))
	d.Write(h.salt)
	return subtle.ConstantTimeCompare(d.Sum(nil), h.hash) == 1
}

// --- $argon2id$: PHC string as written by libargon2 (mosquitto 2.1) ---

type argon2Hash struct {
	time, memory uint32
	threads      uint8
	salt, hash   []byte
}

func parseArgon2id(encoded string) (verifier, error) {
	// $argon2id$v=19$m=47104,t=1,p=1$<salt>$<hash>
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 {
		return nil, errors.New("malformed $argon2id$ hash: want $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<base64 salt>$<base64 hash>")
	}
	if parts[2] != "v=19" {
		return nil, fmt.Errorf("unsupported argon2 version %q: only v=19 is supported", parts[2])
	}
	h := &argon2Hash{}
	seen := map[string]bool{}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil || seen[k] {
			return nil, fmt.Errorf("bad argon2 parameter %q", kv)
		}
		seen[k] = true
		switch k {
		case "m":
			h.memory = uint32(n)
		case "t":
			h.time = uint32(n)
		case "p":
			if n > 255 {
				return nil, fmt.Errorf("argon2 parallelism p=%d is above 255", n)
			}
			h.threads = uint8(n)
		default:
			return nil, fmt.Errorf("unknown argon2 parameter %q", k)
		}
	}
	switch {
	case !seen["m"] || !seen["t"] || !seen["p"]:
		return nil, errors.New("argon2 parameters must include m, t and p")
	case h.threads < 1:
		return nil, errors.New("argon2 parallelism p must be at least 1")
	case h.time < 1 || h.time > maxArgon2Time:
		return nil, fmt.Errorf("argon2 passes t=%d out of range 1..%d", h.time, maxArgon2Time)
	case h.memory < 8*uint32(h.threads) || h.memory > maxArgon2Memory:
		return nil, fmt.Errorf("argon2 memory m=%d KiB out of range %d..%d", h.memory, 8*uint32(h.threads), maxArgon2Memory)
	}
	var err error
	// PHC strings use unpadded standard base64; decodeB64 takes both.
	if h.salt, err = decodeB64("salt", parts[4]); err != nil {
		return nil, err
	}
	if h.hash, err = decodeB64("hash", parts[5]); err != nil {
		return nil, err
	}
	if len(h.hash) < 4 || len(h.hash) > maxHashBytes {
		return nil, fmt.Errorf("argon2 hash is %d bytes, want 4 to %d", len(h.hash), maxHashBytes)
	}
	return h, nil
}

func (h *argon2Hash) verify(password string) bool {
	got := argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.threads, uint32(len(h.hash)))
	return subtle.ConstantTimeCompare(got, h.hash) == 1
}

// --- bcrypt (not written by mosquitto, but common in htpasswd files) ---

type bcryptHash []byte

// maxBcryptCost is the highest bcrypt cost accepted. Each step doubles the
// work: cost 14 takes about a second per check on one core, and the
// format allows 31, which would take days — every CONNECT for that user (or
// against it as the decoy) would hold a hash slot that long.
const maxBcryptCost = 14

func parseBcrypt(encoded string) (verifier, error) {
	cost, err := bcrypt.Cost([]byte(encoded))
	if err != nil {
		return nil, fmt.Errorf("malformed bcrypt hash: %v", err)
	}
	if cost > maxBcryptCost {
		return nil, fmt.Errorf("bcrypt cost %d is over the maximum of %d (each step doubles the time of every login)", cost, maxBcryptCost)
	}
	return bcryptHash(encoded), nil
}

func (h bcryptHash) verify(password string) bool {
	// bcrypt only uses the first 72 bytes of a password. x/crypto refuses
	// longer ones when hashing, but CompareHashAndPassword silently ignores
	// the bytes after the 72nd, as C implementations do: two passwords that
	// share their first 72 bytes both match.
	return bcrypt.CompareHashAndPassword(h, []byte(password)) == nil
}

// --- hashing new passwords ---

// HashPassword hashes password the way mosquitto 2.1's mosquitto_passwd
// does by default for PBKDF2: "$7$1000$<64-byte salt>$<64-byte key>".
//
// mosquitto 2.0 (e.g. Debian 12) rejects salts other than 12 bytes; use
// HashPasswordPBKDF2(password, DefaultPBKDF2Iterations, 12) for files that
// must also be read by mosquitto 2.0.
func HashPassword(password string) (string, error) {
	return HashPasswordPBKDF2(password, DefaultPBKDF2Iterations, DefaultSaltLen)
}

// HashPasswordPBKDF2 hashes password as "$7$<iterations>$<salt>$<key>" with
// a random salt of saltLen bytes (PBKDF2-HMAC-SHA512, 64-byte key, padded
// standard base64).
func HashPasswordPBKDF2(password string, iterations, saltLen int) (string, error) {
	if iterations < 1 || iterations > maxPBKDF2Iterations {
		return "", fmt.Errorf("iterations %d out of range 1..%d", iterations, maxPBKDF2Iterations)
	}
	if saltLen < 1 || saltLen > maxHashBytes {
		return "", fmt.Errorf("salt length %d out of range 1..%d", saltLen, maxHashBytes)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key, err := pbkdf2.Key(sha512.New, password, salt, iterations, sha512Size)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("$7$%d$%s$%s", iterations,
		base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(key)), nil
}

// HashPasswordArgon2id hashes password with mosquitto 2.1's argon2id
// parameters (m=47104 KiB, t=1, p=1, 64-byte salt and key) as a PHC string
// with unpadded base64, exactly the format libargon2 writes.
func HashPasswordArgon2id(password string) (string, error) {
	salt := make([]byte, 64)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argon2Time, argon2Memory, argon2Threads, argon2KeyLen)
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", argon2Memory, argon2Time, argon2Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}
