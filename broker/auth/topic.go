package auth

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxTopicLen is the MQTT limit for a UTF-8 encoded string (2-byte length prefix).
const maxTopicLen = 65535

// sharePrefix introduces an MQTT 5 shared subscription: $share/<group>/<filter>.
const sharePrefix = "$share/"

// ValidTopicName reports why topic cannot be used as a PUBLISH topic name, or
// nil if it can. Rules (MQTT 3.1.1 §4.7, MQTT 5 §4.7): non-empty, at most
// 65535 bytes, valid UTF-8 without U+0000, and no '+' or '#' wildcards.
func ValidTopicName(topic string) error {
	if err := validMQTTString(topic); err != nil {
		return err
	}
	if i := strings.IndexAny(topic, "+#"); i >= 0 {
		return fmt.Errorf("topic name must not contain wildcard %q (at byte %d)", topic[i], i)
	}
	return nil
}

// ValidFilter reports why filter cannot be used as a subscription (or ACL)
// topic filter, or nil if it can. '+' must fill a whole level, '#' must fill
// the whole last level. A shared subscription "$share/<group>/<filter>" is
// accepted when the group is non-empty without wildcards and <filter> is
// itself valid.
func ValidFilter(filter string) error {
	if err := validMQTTString(filter); err != nil {
		return err
	}
	if group, inner, ok := ParseShared(filter); ok {
		if group == "" {
			return errors.New("shared subscription has an empty share name")
		}
		if strings.ContainsAny(group, "+#") {
			return fmt.Errorf("shared subscription share name %q must not contain wildcards", group)
		}
		if inner == "" {
			return errors.New("shared subscription has no topic filter after the share name")
		}
		return validFilterLevels(inner)
	} else if filter == "$share" || strings.HasPrefix(filter, sharePrefix) {
		return errors.New("shared subscription must have the form $share/<name>/<filter>")
	}
	return validFilterLevels(filter)
}

func validFilterLevels(filter string) error {
	for i := 0; i < len(filter); i++ {
		c := filter[i]
		if c != '+' && c != '#' {
			continue
		}
		startsLevel := i == 0 || filter[i-1] == '/'
		endsLevel := i == len(filter)-1 || filter[i+1] == '/'
		if !startsLevel || !endsLevel {
			return fmt.Errorf("wildcard %q must occupy a whole topic level (at byte %d)", c, i)
		}
		if c == '#' && i != len(filter)-1 {
			return fmt.Errorf("'#' must be the last level of a topic filter (at byte %d)", i)
		}
	}
	return nil
}

func validMQTTString(s string) error {
	switch {
	case s == "":
		return errors.New("topic must not be empty")
	case len(s) > maxTopicLen:
		return fmt.Errorf("topic is %d bytes long, the maximum is %d", len(s), maxTopicLen)
	case !utf8.ValidString(s):
		return errors.New("topic is not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		return errors.New("topic must not contain the NUL character")
	}
	return nil
}

// ParseShared splits a shared subscription "$share/<group>/<filter>" into its
// group and filter. ok is false when filter is not a shared subscription. The
// parts are not validated; use ValidFilter for that.
func ParseShared(filter string) (group, inner string, ok bool) {
	rest, found := strings.CutPrefix(filter, sharePrefix)
	if !found {
		return "", "", false
	}
	group, inner, found = strings.Cut(rest, "/")
	if !found {
		return "", "", false
	}
	return group, inner, true
}

// MatchFilter reports whether the topic name matches the subscription
// filter under MQTT rules: '+' matches exactly one level (which may be
// empty), '#' matches the parent level and any number of child levels (so
// "a/#" matches "a"), and topics starting with '$' are only matched by
// filters whose first level is literal (so "#" and "+/x" never match
// "$SYS/x"). Invalid filters or topic names never match. Shared subscription
// prefixes are not interpreted: strip them with ParseShared first.
func MatchFilter(filter, topic string) bool {
	if validFilterLevels(filter) != nil || validMQTTString(filter) != nil || ValidTopicName(topic) != nil {
		return false
	}
	return matchLevels(filter, topic)
}

// matchLevels matches a filter against a topic level by level. Both must be
// syntactically valid; the topic may itself be a filter, in which case its
// wildcards are compared literally (see filterCovers for the wildcard-aware
// version).
func matchLevels(filter, topic string) bool {
	if dollarMismatch(filter, topic) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a": the filter may have exactly one
			// more level, and it must be '#'.
			return fmore == tmore || (fmore && !tmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

// dollarMismatch implements the MQTT rule that wildcards at the first level
// do not match topics beginning with '$' (MQTT 3.1.1 §4.7.2). mosquitto
// applies it symmetrically, which only matters for malformed input.
func dollarMismatch(filter, topic string) bool {
	if filter == "" || topic == "" {
		return true // nothing matches an empty string; also avoids indexing it
	}
	return (topic[0] == '$') != (filter[0] == '$')
}

// filterCovers reports whether every topic that sub can match is also
// matched by acl, i.e. whether the subscription filter sub is a subset of
// the ACL filter acl. A literal level in sub is covered by the same literal
// or '+'; a '+' level by '+' or '#'; a '#' level only by '#'. Both must be
// valid filters without a $share prefix.
func filterCovers(acl, sub string) bool {
	if dollarMismatch(acl, sub) {
		return false
	}
	for {
		al, arest, amore := strings.Cut(acl, "/")
		if al == "#" {
			return true
		}
		sl, srest, smore := strings.Cut(sub, "/")
		switch {
		case sl == "#":
			// Only '#' covers '#' (handled above).
			return false
		case al == "+":
			// '+' covers any single level, including a '+' in sub.
		case al != sl:
			return false
		}
		if !amore || !smore {
			return amore == smore || (amore && !smore && arest == "#")
		}
		acl, sub = arest, srest
	}
}

// IsSysTopic reports whether topic is in the broker's reserved $SYS tree.
// Like mosquitto, any topic starting with "$SYS" counts.
func IsSysTopic(topic string) bool {
	return strings.HasPrefix(topic, "$SYS")
}
