package cluster

import (
	"errors"
	"strings"
)

// Topic ↔ NATS subject mapping.
//
// A topic becomes <prefix>.<level>.<level>..., one NATS token per MQTT
// level, so that NATS routes by interest exactly as MQTT filters match:
// `+` becomes `*` and `#` becomes `>` (and `a/#`, which also matches `a`
// itself [MQTT-4.7.1-2], is subscribed as both `a` and `a.>`).
//
// Inside a level, the bytes NATS treats specially are written %XX (upper
// case hex): `.` (token separator), `*` and `>` (wildcards), `%` (the
// escape itself), space, tab, CR, LF and the other control characters
// (0x01-0x1f, 0x7f). An empty level, legal in MQTT (`a//b`, `/a`) and not in
// NATS, is the token `%`, which no other level can produce. Every other
// byte (UTF-8 included) is kept, so `sensors/room 1/temp.c` is
// `mqtt.sensors.room%201.temp%2Ec`. The mapping is reversible.

const hexDigits = "0123456789ABCDEF"

func needsEscape(c byte) bool {
	return c <= 0x20 || c == 0x7f || c == '.' || c == '*' || c == '>' || c == '%'
}

// escapeLevel writes one MQTT topic level as a NATS token.
func escapeLevel(sb *strings.Builder, level string) {
	if level == "" {
		sb.WriteByte('%')
		return
	}
	for i := 0; i < len(level); i++ {
		c := level[i]
		if needsEscape(c) {
			sb.WriteByte('%')
			sb.WriteByte(hexDigits[c>>4])
			sb.WriteByte(hexDigits[c&0xf])
			continue
		}
		sb.WriteByte(c)
	}
}

// TopicSubject maps a topic name (no wildcards) to its subject.
func TopicSubject(prefix, topic string) string {
	var sb strings.Builder
	sb.Grow(len(prefix) + len(topic) + 8)
	sb.WriteString(prefix)
	for level := range strings.SplitSeq(topic, "/") {
		sb.WriteByte('.')
		escapeLevel(&sb, level)
	}
	return sb.String()
}

// FilterSubjects maps a topic filter (not a shared one) to the subjects to
// subscribe to: one, or two for a filter ending in `#` that has a parent
// level (`a/#` matches `a`).
func FilterSubjects(prefix, filter string) []string {
	levels := strings.Split(filter, "/")
	var sb strings.Builder
	sb.WriteString(prefix)
	for i, level := range levels {
		if level == "#" && i == len(levels)-1 {
			parent := sb.String()
			if i == 0 {
				return []string{parent + ".>"}
			}
			return []string{parent, parent + ".>"}
		}
		sb.WriteByte('.')
		if level == "+" {
			sb.WriteByte('*')
			continue
		}
		escapeLevel(&sb, level)
	}
	return []string{sb.String()}
}

var errBadSubject = errors.New("not an mqtt topic subject")

// SubjectTopic is the inverse of TopicSubject.
func SubjectTopic(prefix, subject string) (string, error) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	if !ok {
		return "", errBadSubject
	}
	var sb strings.Builder
	sb.Grow(len(rest))
	for i, tok := range strings.Split(rest, ".") {
		if i > 0 {
			sb.WriteByte('/')
		}
		if tok == "%" {
			continue
		}
		if tok == "" {
			return "", errBadSubject
		}
		for j := 0; j < len(tok); j++ {
			c := tok[j]
			if c != '%' {
				sb.WriteByte(c)
				continue
			}
			if j+2 >= len(tok) {
				return "", errBadSubject
			}
			hi, lo := unhex(tok[j+1]), unhex(tok[j+2])
			if hi < 0 || lo < 0 {
				return "", errBadSubject
			}
			b := byte(hi<<4 | lo)
			if !needsEscape(b) || b == 0 {
				return "", errBadSubject // not the canonical form
			}
			sb.WriteByte(b)
			j += 2
		}
	}
	return sb.String(), nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}
