package auth

import (
	"encoding/base64"
	"strings"
	"testing"
)

// Vectors computed independently of this package: $6$/$7$ with Python's
// hashlib (pbkdf2_hmac / sha512), argon2id with Debian's argon2 CLI
// (libargon2), bcrypt with Apache's htpasswd -B.
var hashVectors = []struct {
	name, hash, password string
}{
	{"pbkdf2 mosquitto 2.0 (101 iter, 12-byte salt)",
		"$7$101$MDEyMzQ1Njc4OWFi$y5A0VhSHpIf15rNcI0/F6D9m8fnHmRCFQtNYyREYwOyiBEFpR0STXOSmLf7dPWpSC5ApPx/UNKjnNiUCIamdBw==",
		"hunter2"},
	{"pbkdf2 mosquitto 2.1 (1000 iter, 64-byte salt)",
		"$7$1000$AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==$53KiEygVzVVEVUVTe4h79yMtYp0OxxoKFip82vf7OCrEbcm4/E88oGkCyN0NhQ7fLOSBIpiITuELG/0ldDPFMQ==",
		"correct horse"},
	{"pbkdf2 odd salt length, padded",
		"$7$7$YWJjZGU=$jUGEjHHhGgGOC1GUtoJ+bXJSWnmAc4kRJd2pA8j52uE3t2DCuoHg7w2odeUPDRFMPQS2YPgicqkWTyNNoxvBFA==",
		"pw"},
	{"pbkdf2 odd salt length, unpadded",
		"$7$7$YWJjZGU$jUGEjHHhGgGOC1GUtoJ+bXJSWnmAc4kRJd2pA8j52uE3t2DCuoHg7w2odeUPDRFMPQS2YPgicqkWTyNNoxvBFA",
		"pw"},
	{"sha512 (mosquitto 1.x)",
		"$6$c2FsdHNhbHRzYWx0$jlrUV4Aelq8dBdHcGYRjc4KAn3GO6Wbz2wdvnpJXrWuFZ8iglkUBLJ3j38yh2UasbQNV6OTtSjSUd4eVUAbguQ==",
		"old-school"},
	{"argon2id mosquitto 2.1 parameters",
		"$argon2id$v=19$m=47104,t=1,p=1$c29tZXNhbHRTT01FU0FMVA$nm6YerXqcuJKBrlmYF8yppmyF1b5sGiR51MnTS9+V0wh4rPon5SnbGpRTK/Ll+hiZ+VAxKjDn06UkSZO1p3OHg",
		"mosquitto argon"},
	{"argon2id small parameters",
		"$argon2id$v=19$m=64,t=2,p=2$c2FsdHNhbHQ$bvEEHFpgKEQFx6ehxtpGfAXNPWVE7ujbf2n5n9+gez8",
		"short"},
	{"argon2id padded base64",
		"$argon2id$v=19$m=64,t=2,p=2$c2FsdHNhbHQ=$bvEEHFpgKEQFx6ehxtpGfAXNPWVE7ujbf2n5n9+gez8=",
		"short"},
	{"bcrypt $2y$", "$2y$05$CVC9BYGGxEUaPuo9YhzsROJVXR/8XhiUQEacov8da8sGWCiJS7iem", "b-pass"},
	{"bcrypt $2y$ cost 4", "$2y$04$oAuPeiPliLeznRapxtaYi.X8qHLGl5AKO4rnTG0mmZHOlZCGdvoze", "c pass"},
	{"bcrypt $2a$", "$2a$04$oAuPeiPliLeznRapxtaYi.X8qHLGl5AKO4rnTG0mmZHOlZCGdvoze", "c pass"},
	{"bcrypt $2b$", "$2b$04$oAuPeiPliLeznRapxtaYi.X8qHLGl5AKO4rnTG0mmZHOlZCGdvoze", "c pass"},
}

func TestVerifyHashVectors(t *testing.T) {
	for _, v := range hashVectors {
		t.Run(v.name, func(t *testing.T) {
			for _, c := range []struct {
				pw   string
				want bool
			}{
				{v.password, true},
				{v.password + "x", false},
				{strings.ToUpper(v.password), false},
				{"", false},
			} {
				ok, err := VerifyHash(v.hash, c.pw)
				if err != nil {
					t.Fatalf("VerifyHash: %v", err)
				}
				if ok != c.want {
					t.Errorf("VerifyHash(%q) = %v, want %v", c.pw, ok, c.want)
				}
			}
		})
	}
}

func TestValidateHashErrors(t *testing.T) {
	good64 := base64.StdEncoding.EncodeToString(make([]byte, 64))
	for _, c := range []struct{ hash, wantErr string }{
		{"", "empty password hash"},
		{"plaintext", "not hashed"},
		{"$5$abc$def", `unknown hash type "$5$"`},
		{"$1$abc", `unknown hash type "$1$"`},
		{"$argon2i$v=19$m=64,t=1,p=1$c2FsdA$" + good64, `unknown hash type "$argon2i$"`},
		{"$7$101$MDEy", "malformed $7$"},
		{"$7$abc$MDEy$" + good64, "bad $7$ iteration count"},
		{"$7$0$MDEy$" + good64, "bad $7$ iteration count"},
		{"$7$99999999999$MDEy$" + good64, "bad $7$ iteration count"},
		{"$7$101$!!!!$" + good64, "bad base64 in salt"},
		{"$7$101$$" + good64, "empty salt"},
		{"$7$101$MDEy$***", "bad base64 in hash"},
		{"$7$101$MDEy$MDEy", "$7$ hash is 3 bytes, want 64"},
		{"$7$101$MDEy$" + good64 + "$extra", "malformed $7$"},
		{"$6$MDEy", "malformed $6$"},
		{"$6$MDEy$MDEy", "$6$ hash is 3 bytes"},
		{"$6$M@Ey$" + good64, "bad base64 in salt"},
		{"$argon2id$v=16$m=64,t=1,p=1$c2FsdA$" + good64, "unsupported argon2 version"},
		{"$argon2id$m=64,t=1,p=1$c2FsdA$" + good64, "malformed $argon2id$"},
		{"$argon2id$v=19$m=64,t=1$c2FsdA$" + good64, "must include m, t and p"},
		{"$argon2id$v=19$m=64,t=1,p=1,x=2$c2FsdA$" + good64, "unknown argon2 parameter"},
		{"$argon2id$v=19$m=64,t=1,t=1,p=1$c2FsdA$" + good64, "bad argon2 parameter"},
		{"$argon2id$v=19$m=64,t=0,p=1$c2FsdA$" + good64, "passes t=0"},
		{"$argon2id$v=19$m=4,t=1,p=1$c2FsdA$" + good64, "memory m=4"},
		{"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdA$" + good64, "memory m=99999999"},
		{"$argon2id$v=19$m=64,t=1,p=0$c2FsdA$" + good64, "parallelism p must be at least 1"},
		{"$argon2id$v=19$m=64,t=1,p=300$c2FsdA$" + good64, "above 255"},
		{"$argon2id$v=19$m=64,t=1,p=1$c2FsdA$YQ", "argon2 hash is 1 bytes"},
		{"$2y$05$short", "malformed bcrypt hash"},
		{"$2y$99$CVC9BYGGxEUaPuo9YhzsROJVXR/8XhiUQEacov8da8sGWCiJS7iem", "malformed bcrypt hash"},
	} {
		err := ValidateHash(c.hash)
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("ValidateHash(%q) = %v, want error containing %q", c.hash, err, c.wantErr)
		}
	}
}

func TestHashPasswordFormat(t *testing.T) {
	h, err := HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(h, "$")
	if len(parts) != 5 || parts[1] != "7" || parts[2] != "1000" {
		t.Fatalf("HashPassword = %q, want $7$1000$<salt>$<hash>", h)
	}
	for i, want := range map[int]int{3: 64, 4: 64} {
		b, err := base64.StdEncoding.DecodeString(parts[i]) // padded standard base64
		if err != nil || len(b) != want {
			t.Errorf("part %d = %q: %d bytes, err %v; want %d bytes of padded base64", i, parts[i], len(b), err, want)
		}
	}
	if ok, _ := VerifyHash(h, "s3cret"); !ok {
		t.Error("own hash does not verify")
	}
	if ok, _ := VerifyHash(h, "s3cret "); ok {
		t.Error("own hash accepts wrong password")
	}
	h2, _ := HashPassword("s3cret")
	if h2 == h {
		t.Error("two hashes of the same password are equal: salt not random")
	}
}

func TestHashPasswordPBKDF2(t *testing.T) {
	h, err := HashPasswordPBKDF2("pw", 101, 12)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$7$101$") || len(strings.Split(h, "$")[3]) != 16 {
		t.Errorf("HashPasswordPBKDF2(101, 12) = %q, want $7$101$ and a 16-character salt", h)
	}
	if ok, _ := VerifyHash(h, "pw"); !ok {
		t.Error("does not verify")
	}
	for _, bad := range [][2]int{{0, 12}, {101, 0}, {maxPBKDF2Iterations + 1, 12}} {
		if _, err := HashPasswordPBKDF2("pw", bad[0], bad[1]); err == nil {
			t.Errorf("HashPasswordPBKDF2(%d, %d) succeeded", bad[0], bad[1])
		}
	}
}

func TestHashPasswordArgon2id(t *testing.T) {
	h, err := HashPasswordArgon2id("argon pw")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=47104,t=1,p=1$") || strings.Contains(h, "=$") || strings.HasSuffix(h, "=") {
		t.Errorf("HashPasswordArgon2id = %q, want mosquitto 2.1 parameters and unpadded base64", h)
	}
	if ok, _ := VerifyHash(h, "argon pw"); !ok {
		t.Error("does not verify")
	}
	if ok, _ := VerifyHash(h, "argon pW"); ok {
		t.Error("accepts wrong password")
	}
}
