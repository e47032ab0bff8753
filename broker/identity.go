package broker

import (
	"crypto/tls"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// IdentitySource says where a client's username comes from on a TLS
// connection: from CONNECT, or from its verified client certificate
// (mosquitto's use_identity_as_username and use_subject_as_username).
type IdentitySource uint8

const (
	// IdentityDefault, in a door's ConnInfo, leaves the choice to the
	// policy (see IdentityPolicy); for a policy it means IdentityNone.
	IdentityDefault IdentitySource = iota
	// IdentityNone: the username is the one sent in CONNECT.
	IdentityNone
	// IdentityCN: the username is the first CN of the verified client
	// certificate's subject (use_identity_as_username).
	IdentityCN
	// IdentitySubject: the username is the verified client certificate's
	// subject DN in RFC 2253 form, as OpenSSL prints it with
	// XN_FLAG_RFC2253 (use_subject_as_username).
	IdentitySubject
)

func (s IdentitySource) String() string {
	switch s {
	case IdentityNone:
		return "none"
	case IdentityCN:
		return "use_identity_as_username"
	case IdentitySubject:
		return "use_subject_as_username"
	}
	return "default"
}

// fromCert reports whether s takes the username from a certificate.
func (s IdentitySource) fromCert() bool { return s == IdentityCN || s == IdentitySubject }

// IdentityPolicy is implemented by policies that have a broker-wide
// identity setting; a door's own setting (ConnInfo.Identity) wins.
type IdentityPolicy interface {
	IdentitySource() IdentitySource
}

// ErrNoVerifiedCertificate is returned by CertUsername when the connection
// has no client certificate verified against a trust pool.
var ErrNoVerifiedCertificate = errors.New("no verified client certificate")

// CertUsername returns the username the client certificate of state gives
// under src (IdentityCN or IdentitySubject). Only a chain that crypto/tls
// verified counts: the client_auth modes "request" and "require" accept any
// certificate without checking who issued it, and a name from such a
// certificate is whatever the client wrote into it.
func CertUsername(state *tls.ConnectionState, src IdentitySource) (string, error) {
	if state == nil || len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return "", ErrNoVerifiedCertificate
	}
	leaf := state.VerifiedChains[0][0]
	var name string
	var err error
	switch src {
	case IdentityCN:
		name, err = FirstCommonName(leaf.RawSubject)
	case IdentitySubject:
		name, err = SubjectRFC2253(leaf.RawSubject)
	default:
		return "", fmt.Errorf("identity source %v takes no name from certificates", src)
	}
	if err != nil {
		return "", err
	}
	if name == "" {
		return "", errors.New("client certificate gives an empty username")
	}
	return name, nil
}

// rawATV and rdnSET mirror pkix.AttributeTypeAndValue and
// pkix.RelativeDistinguishedNameSET but keep each value's DER, which the
// RFC 2253 form needs for fields it dumps as hex. (encoding/asn1 treats a
// slice type whose name ends in "SET" as SET OF.)
type rawATV struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

type rdnSET []rawATV

func parseName(raw []byte) ([]rdnSET, error) {
	var seq []rdnSET
	rest, err := asn1.Unmarshal(raw, &seq)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate subject: %w", err)
	}
	if len(rest) > 0 {
		return nil, errors.New("parsing certificate subject: trailing data")
	}
	return seq, nil
}

var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// FirstCommonName returns the first commonName of a DER subject, as
// mosquitto's use_identity_as_username takes it (X509_NAME_get_index_by_NID
// from the start). Like mosquitto it refuses a CN with a NUL byte, which
// could make two certificates look like one user; unlike mosquitto, which
// copies raw bytes, it also refuses one that is not valid UTF-8, since MQTT
// usernames must be UTF-8.
func FirstCommonName(rawSubject []byte) (string, error) {
	seq, err := parseName(rawSubject)
	if err != nil {
		return "", err
	}
	for _, rdn := range seq {
		for _, atv := range rdn {
			if !atv.Type.Equal(oidCommonName) {
				continue
			}
			s, ok := decodeDirectoryString(atv.Value)
			if !ok || !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
				return "", errors.New("client certificate CN is not a plain UTF-8 string")
			}
			return s, nil
		}
	}
	return "", errors.New("client certificate has no CN")
}

// shortNames are OpenSSL's short names (OBJ_nid2sn) for the attributes that
// appear in certificate subjects, as XN_FLAG_FN_SN prints them. Attributes
// missing here are printed as a dotted OID with the value dumped as hex,
// which is what OpenSSL does for attributes it does not know.
var shortNames = map[string]string{
	"2.5.4.3":                    "CN",
	"2.5.4.4":                    "SN",
	"2.5.4.5":                    "serialNumber",
	"2.5.4.6":                    "C",
	"2.5.4.7":                    "L",
	"2.5.4.8":                    "ST",
	"2.5.4.9":                    "street",
	"2.5.4.10":                   "O",
	"2.5.4.11":                   "OU",
	"2.5.4.12":                   "title",
	"2.5.4.15":                   "businessCategory",
	"2.5.4.17":                   "postalCode",
	"2.5.4.41":                   "name",
	"2.5.4.42":                   "GN",
	"2.5.4.43":                   "initials",
	"2.5.4.44":                   "generationQualifier",
	"2.5.4.46":                   "dnQualifier",
	"2.5.4.65":                   "pseudonym",
	"2.5.4.97":                   "organizationIdentifier",
	"1.2.840.113549.1.9.1":       "emailAddress",
	"0.9.2342.19200300.100.1.1":  "UID",
	"0.9.2342.19200300.100.1.25": "DC",
	"1.3.6.1.4.1.311.60.2.1.1":   "jurisdictionL",
	"1.3.6.1.4.1.311.60.2.1.2":   "jurisdictionST",
	"1.3.6.1.4.1.311.60.2.1.3":   "jurisdictionC",
}

// SubjectRFC2253 formats a DER subject the way mosquitto's
// use_subject_as_username does: OpenSSL's X509_NAME_print_ex with
// XN_FLAG_RFC2253, i.e. attributes in reverse order, RDNs separated by
// ',' and the values of a multi-valued RDN by '+', short attribute names, the characters
// ,+"\<>; escaped with a backslash, a leading '#' or space and a trailing
// space escaped, control characters and every byte of a non-ASCII
// character written as \XX, and unknown attributes or non-string values as
// '#' and the hex DER.
func SubjectRFC2253(rawSubject []byte) (string, error) {
	seq, err := parseName(rawSubject)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for i := len(seq) - 1; i >= 0; i-- {
		if i != len(seq)-1 {
			b.WriteByte(',')
		}
		// XN_FLAG_DN_REV reverses the entries, also inside a
		// multi-valued RDN.
		for j := len(seq[i]) - 1; j >= 0; j-- {
			atv := seq[i][j]
			if j != len(seq[i])-1 {
				b.WriteByte('+')
			}
			sn, known := shortNames[atv.Type.String()]
			if !known {
				sn = atv.Type.String()
			}
			b.WriteString(sn)
			b.WriteByte('=')
			s, isString := decodeDirectoryString(atv.Value)
			if !known || !isString {
				b.WriteByte('#')
				b.WriteString(strings.ToUpper(hex.EncodeToString(atv.Value.FullBytes)))
				continue
			}
			escape2253(&b, s)
		}
	}
	return b.String(), nil
}

// escape2253 writes s with OpenSSL's ASN1_STRFLGS_RFC2253 escaping (after
// UTF8_CONVERT: each byte of a multi-byte character is escaped as \XX).
func escape2253(b *strings.Builder, s string) {
	bs := []byte(s)
	for i, c := range bs {
		switch {
		case c > 0x7f || c < 0x20 || c == 0x7f:
			fmt.Fprintf(b, "\\%02X", c)
		case strings.IndexByte(",+\"\\<>;", c) >= 0:
			b.WriteByte('\\')
			b.WriteByte(c)
		case i == 0 && (c == '#' || c == ' '):
			b.WriteByte('\\')
			b.WriteByte(c)
		case i == len(bs)-1 && c == ' ':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
}

// decodeDirectoryString returns the text of a DirectoryString-like value as
// UTF-8, converting the legacy encodings the way OpenSSL does (T61String
// as Latin-1, BMPString as UCS-2, UniversalString as UCS-4).
func decodeDirectoryString(v asn1.RawValue) (string, bool) {
	if v.Class != asn1.ClassUniversal {
		return "", false
	}
	switch v.Tag {
	case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String,
		asn1.TagNumericString, 26 /* VisibleString */ :
		return string(v.Bytes), true
	case asn1.TagT61String:
		r := make([]rune, len(v.Bytes))
		for i, c := range v.Bytes {
			r[i] = rune(c)
		}
		return string(r), true
	case asn1.TagBMPString:
		if len(v.Bytes)%2 != 0 {
			return "", false
		}
		r := make([]rune, 0, len(v.Bytes)/2)
		for i := 0; i < len(v.Bytes); i += 2 {
			r = append(r, rune(binary.BigEndian.Uint16(v.Bytes[i:])))
		}
		return string(r), true
	case 28: // UniversalString
		if len(v.Bytes)%4 != 0 {
			return "", false
		}
		r := make([]rune, 0, len(v.Bytes)/4)
		for i := 0; i < len(v.Bytes); i += 4 {
			r = append(r, rune(binary.BigEndian.Uint32(v.Bytes[i:])))
		}
		return string(r), true
	}
	return "", false
}
