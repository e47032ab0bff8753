package auth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Access is what an ACL rule grants. Deny is the zero value: a matching
// deny rule refuses access whatever other rules say.
type Access uint8

const (
	Deny      Access = 0
	Read      Access = 1 << 0 // receive messages, subscribe
	Write     Access = 1 << 1 // publish
	ReadWrite        = Read | Write
)

// ParseAccess parses the access word of an acl_file rule.
func ParseAccess(s string) (Access, error) {
	switch s {
	case "read":
		return Read, nil
	case "write":
		return Write, nil
	case "readwrite":
		return ReadWrite, nil
	case "deny":
		return Deny, nil
	}
	return 0, fmt.Errorf("invalid access %q (want read, write, readwrite or deny)", s)
}

func (a Access) String() string {
	switch a {
	case Deny:
		return "deny"
	case Read:
		return "read"
	case Write:
		return "write"
	case ReadWrite:
		return "readwrite"
	}
	return fmt.Sprintf("Access(%d)", uint8(a))
}

// ACL holds access rules with mosquitto's acl_file semantics (2.x):
//
//   - Topic rules belong to one username, or to anonymous clients (those
//     without a username; an empty username counts as none).
//   - Pattern rules apply to every client; "%u" and "%c" in the filter are
//     replaced by the username and client id. A pattern using %u is skipped
//     for clients without a username, one using %c for an empty client id.
//   - The client's own topic rules are checked first, then the patterns. In
//     each list a matching deny rule refuses access at once; otherwise the
//     first matching rule that grants the wanted access allows it.
//   - If nothing allows the access, it is denied (default deny).
//   - Before patterns are checked, a username or client id containing '+'
//     or '#' is refused, so a client cannot inject wildcards through %u/%c.
//     A client id containing '/' is refused too when some pattern uses %c
//     (client ids are chosen by the client; see the package notes).
//   - Filters match topics by MQTT rules: topics beginning with '$' only
//     match filters whose first level is literal.
//
// A nil *ACL means "no ACL configured" and allows everything except what
// CanPublish refuses for every client ($SYS and $share). A non-nil ACL
// without rules denies everything, as an empty mosquitto acl_file does.
//
// Build an ACL with ParseACLFile or NewACL plus AddTopic/AddPattern. It
// must not be modified while it is being checked concurrently.
type ACL struct {
	anon     ruleList
	users    map[string]*ruleList
	order    []string // usernames in first-seen order, for WriteTo
	patterns ruleList
	// patternsUseClientID is set when some pattern contains %c; then a
	// client id with '/' cannot use patterns (see CanPublish).
	patternsUseClientID bool
}

type rule struct {
	filter string
	access Access
}

// ruleList keeps deny rules apart from the others: mosquitto moves deny
// rules to the front of a list, so they are always checked first. Within
// each part order does not change the outcome, but it is kept for WriteTo.
type ruleList struct {
	deny, allow []rule
	// all keeps insertion order for WriteTo.
	all []rule
}

func (l *ruleList) add(r rule) {
	if r.access == Deny {
		l.deny = append(l.deny, r)
	} else {
		l.allow = append(l.allow, r)
	}
	l.all = append(l.all, r)
}

// NewACL returns an ACL without rules, which denies everything.
func NewACL() *ACL {
	return &ACL{users: map[string]*ruleList{}}
}

// AddTopic adds a topic rule for user, or for anonymous clients if user is
// "" (like "topic" lines before the first "user" line of an acl_file).
func (a *ACL) AddTopic(user string, access Access, filter string) error {
	if err := validRule(access, filter); err != nil {
		return err
	}
	if user == "" {
		a.anon.add(rule{filter, access})
		return nil
	}
	l := a.users[user]
	if l == nil {
		l = &ruleList{}
		a.users[user] = l
		a.order = append(a.order, user)
	}
	l.add(rule{filter, access})
	return nil
}

// AddPattern adds a pattern rule, which applies to every client after "%u"
// and "%c" in filter are replaced by its username and client id.
func (a *ACL) AddPattern(access Access, filter string) error {
	if err := validRule(access, filter); err != nil {
		return err
	}
	a.patterns.add(rule{filter, access})
	if strings.Contains(filter, "%c") {
		a.patternsUseClientID = true
	}
	return nil
}

func validRule(access Access, filter string) error {
	if access&^ReadWrite != 0 {
		return fmt.Errorf("invalid access %d", access)
	}
	if err := ValidFilter(filter); err != nil {
		return fmt.Errorf("invalid topic filter %q: %w", filter, err)
	}
	if _, _, shared := ParseShared(filter); shared {
		return fmt.Errorf("invalid topic filter %q: ACL rules take the plain topic filter, not a $share/ subscription", filter)
	}
	return nil
}

// CanPublish reports whether the client may publish to topic. Topics
// beginning with "$SYS" (the broker's own tree) or "$share" are refused
// for every client whatever the rules say, as mosquitto does; invalid topic
// names are refused too.
func (a *ACL) CanPublish(user, clientID, topic string) bool {
	if ValidTopicName(topic) != nil || IsSysTopic(topic) || strings.HasPrefix(topic, "$share") {
		return false
	}
	return a == nil || a.check(user, clientID, topic, Write, matchLevels)
}

// CanRead reports whether a message published on topic may be delivered to
// the client (including retained messages sent on subscribe). This is the
// check mosquitto applies to every delivered message.
func (a *ACL) CanRead(user, clientID, topic string) bool {
	if ValidTopicName(topic) != nil {
		return false
	}
	return a == nil || a.check(user, clientID, topic, Read, matchLevels)
}

// CanSubscribe reports whether the client may subscribe to filter: some
// rule granting read access must cover the whole filter ("a/#" is covered
// by "a/#" or "#", "a/b" and "a/+" by "a/+"), and no deny rule may cover
// it. A $share/<group>/ prefix is removed before checking. Deny rules that
// cover only part of the filter do not refuse the subscription; CanRead
// still has to be applied to each delivered message.
//
// This is stricter than mosquitto 2.x, whose acl_file accepts every
// subscription and only filters deliveries (see the package notes).
func (a *ACL) CanSubscribe(user, clientID, filter string) bool {
	if ValidFilter(filter) != nil {
		return false
	}
	if _, inner, ok := ParseShared(filter); ok {
		filter = inner
	}
	return a == nil || a.check(user, clientID, filter, Read, filterCovers)
}

// check runs the mosquitto evaluation described on ACL. match(aclFilter,
// subject) says whether a rule applies to the subject (a topic or a
// subscription filter).
func (a *ACL) check(user, clientID, subject string, want Access, match func(string, string) bool) bool {
	own := &a.anon
	if user != "" {
		own = a.users[user]
	}
	if own != nil {
		for _, r := range own.deny {
			if match(r.filter, subject) {
				return false
			}
		}
		for _, r := range own.allow {
			if r.access&want != 0 && match(r.filter, subject) {
				return true
			}
		}
	}
	if len(a.patterns.all) == 0 {
		return false
	}
	if strings.ContainsAny(user, "+#") || strings.ContainsAny(clientID, "+#") ||
		(a.patternsUseClientID && strings.Contains(clientID, "/")) {
		return false
	}
	for _, r := range a.patterns.deny {
		if f, ok := expandPattern(r.filter, user, clientID); ok && match(f, subject) {
			return false
		}
	}
	for _, r := range a.patterns.allow {
		if r.access&want == 0 {
			continue
		}
		if f, ok := expandPattern(r.filter, user, clientID); ok && match(f, subject) {
			return true
		}
	}
	return false
}

// expandPattern replaces %u and %c in a pattern filter. Like mosquitto 2.0
// the placeholders are replaced wherever they appear, not only as whole
// levels. ok is false when the pattern needs a value the client lacks.
func expandPattern(filter, user, clientID string) (string, bool) {
	if !strings.Contains(filter, "%") {
		return filter, true
	}
	var b strings.Builder
	b.Grow(len(filter) + len(user) + len(clientID))
	for i := 0; i < len(filter); i++ {
		if filter[i] == '%' && i+1 < len(filter) {
			switch filter[i+1] {
			case 'u':
				if user == "" {
					return "", false
				}
				b.WriteString(user)
				i++
				continue
			case 'c':
				if clientID == "" {
					return "", false
				}
				b.WriteString(clientID)
				i++
				continue
			}
		}
		b.WriteByte(filter[i])
	}
	return b.String(), true
}

// ParseACLFile reads rules in mosquitto's acl_file syntax:
//
//	# comment
//	topic [read|write|readwrite|deny] <filter>    (anonymous clients until the first "user")
//	user <username>
//	topic [read|write|readwrite|deny] <filter>    (rules for <username>)
//	pattern [read|write|readwrite|deny] <filter>  (all clients, %u and %c substituted)
//
// The access word defaults to readwrite. As in mosquitto, the filter is the
// rest of the line (so it may contain spaces, but then the access word is
// required), and a single word after "topic" is the filter. name is used
// in error messages, which have the form "name:line: problem".
func ParseACLFile(r io.Reader, name string) (*ACL, error) {
	a := NewACL()
	user := "" // current section; "" = anonymous
	err := scanLines(r, name, func(_ int, line string) error {
		line = strings.TrimRight(line, " \t\r\n\v\f")
		line = strings.TrimLeft(line, " \t")
		if line == "" || line[0] == '#' {
			return nil
		}
		keyword, rest := cutWord(line)
		switch keyword {
		case "user":
			if rest == "" {
				return errors.New(`missing username after "user"`)
			}
			user = rest
			return nil
		case "topic", "pattern":
			first, after := cutWord(rest)
			if first == "" {
				return fmt.Errorf("missing topic filter after %q", keyword)
			}
			access, filter := ReadWrite, first
			if after != "" {
				var err error
				if access, err = ParseAccess(first); err != nil {
					return err
				}
				filter = after
			}
			if keyword == "topic" {
				return a.AddTopic(user, access, filter)
			}
			return a.AddPattern(access, filter)
		}
		return fmt.Errorf("unknown keyword %q (want topic, pattern or user)", keyword)
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// cutWord splits off the first blank-separated word; rest has its
// surrounding blanks removed.
func cutWord(s string) (word, rest string) {
	s = trimBlanks(s)
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], trimBlanks(s[i:])
}

// WriteTo writes the ACL in acl_file syntax such that ParseACLFile reads
// back the same rules: anonymous rules first, then one section per user,
// then the patterns. Access words are always written, so filters with
// spaces survive. Usernames or filters with leading or trailing blanks or
// a line break (possible only through AddTopic) cannot be represented and
// make WriteTo fail.
func (a *ACL) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	var n int64
	write := func(format string, args ...any) {
		m, _ := fmt.Fprintf(bw, format, args...)
		n += int64(m)
	}
	for _, name := range a.order {
		if err := writableWord("username", name); err != nil {
			return 0, err
		}
	}
	for _, l := range a.allLists() {
		for _, r := range l.all {
			if err := writableWord("topic filter", r.filter); err != nil {
				return 0, err
			}
		}
	}
	for _, r := range a.anon.all {
		write("topic %s %s\n", r.access, r.filter)
	}
	for _, name := range a.order {
		write("user %s\n", name)
		for _, r := range a.users[name].all {
			write("topic %s %s\n", r.access, r.filter)
		}
	}
	for _, r := range a.patterns.all {
		write("pattern %s %s\n", r.access, r.filter)
	}
	return n, bw.Flush()
}

func (a *ACL) allLists() []*ruleList {
	lists := []*ruleList{&a.anon, &a.patterns}
	for _, name := range a.order {
		lists = append(lists, a.users[name])
	}
	return lists
}

func writableWord(what, s string) error {
	// Representable iff ParseACLFile would read the same string back: it
	// splits lines at '\n' and trims these characters around words.
	if s == "" || strings.Contains(s, "\n") || strings.TrimLeft(strings.TrimRight(s, " \t\r\v\f"), " \t") != s {
		return fmt.Errorf("%s %q cannot be written to an acl_file", what, s)
	}
	return nil
}
