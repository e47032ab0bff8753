// Package auth implements mosquitto-compatible authentication and
// authorisation for the broker: password files (mosquitto_passwd formats
// plus bcrypt), acl_file rules and the MQTT topic matching they rely on.
// It depends only on the standard library and golang.org/x/crypto.
//
// # Compatibility notes
//
// Password files are read as mosquitto 2.0/2.1 read them ("user:hash",
// blanks around both parts ignored, '#' comments). Differences, all on the
// safe side: a malformed line, an unknown or plain-text hash, an entry
// without a hash (which mosquitto treats as "any password") and a
// duplicate user are errors instead of being logged and skipped; $7$ salts
// of any length are accepted (mosquitto 2.0 only accepts 12 bytes, 2.1 12
// or 64); bcrypt hashes are accepted in addition. mosquitto hashes a
// password only up to its first NUL byte; here every byte counts.
//
// HashPassword writes mosquitto 2.1's default format ($7$, 1000 iterations,
// 64-byte salt), which mosquitto 2.0 rejects; HashPasswordPBKDF2 with a
// 12-byte salt produces hashes both versions accept.
//
// ACLs follow mosquitto 2.x's acl_file evaluation (see ACL). Differences:
//
//   - Subscriptions: mosquitto 2.x's acl_file accepts every SUBSCRIBE and
//     only filters messages on delivery. CanSubscribe instead refuses a
//     subscription filter unless a read rule covers all of it, so clients
//     learn about missing rights from the SUBACK. A broker that wants
//     mosquitto's exact behaviour can skip CanSubscribe; CanRead must be
//     applied to every delivery either way.
//   - An empty username counts as no username (anonymous section, %u
//     patterns skipped) and an empty client id skips %c patterns;
//     mosquitto substitutes the empty string.
//   - A client id containing '/' is refused by pattern rules when a
//     pattern uses %c. mosquitto 2.0 only refuses '+' and '#'; since the
//     client picks its own id, "victim/x" would otherwise reach into the
//     subtree that "devices/%c/#" gives client "victim". Usernames come
//     from the password file, so '/' stays allowed there as in mosquitto.
//   - In an acl_file, a line whose first non-blank character is '#' is a
//     comment (mosquitto only accepts '#' in the first column), tabs
//     separate words like spaces, and "$share/..." filters are rejected
//     because ACL rules are matched against plain topics.
//   - Publishing to topics starting with "$SYS" or "$share" is always
//     refused, as in mosquitto, except that mosquitto lets bridges write
//     $SYS/broker/connection/+/state; there are no bridges here.
package auth
