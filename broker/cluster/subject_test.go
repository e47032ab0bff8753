package cluster

import (
	"slices"
	"testing"
)

func TestSubjectMapping(t *testing.T) {
	for topic, subject := range map[string]string{
		"a/b/c":                 "mqtt.a.b.c",
		"sensors/room 1/temp.c": "mqtt.sensors.room%201.temp%2Ec",
		"a//b":                  "mqtt.a.%.b",
		"/a":                    "mqtt.%.a",
		"a/":                    "mqtt.a.%",
		"*/>/%":                 "mqtt.%2A.%3E.%25",
		"tab\t/ü":               "mqtt.tab%09.ü",
		"$share-like/x":         "mqtt.$share-like.x",
	} {
		if got := TopicSubject("mqtt", topic); got != subject {
			t.Errorf("TopicSubject(%q) = %q, want %q", topic, got, subject)
		}
		back, err := SubjectTopic("mqtt", subject)
		if err != nil || back != topic {
			t.Errorf("SubjectTopic(%q) = %q, %v, want %q", subject, back, err, topic)
		}
	}
	for _, bad := range []string{"other.a", "mqtt.a..b", "mqtt.%2", "mqtt.%41", "mqtt.%zz", "mqtt.%00"} {
		if got, err := SubjectTopic("mqtt", bad); err == nil {
			t.Errorf("SubjectTopic(%q) = %q, want an error", bad, got)
		}
	}
	for filter, want := range map[string][]string{
		"a/+/c":   {"mqtt.a.*.c"},
		"#":       {"mqtt.>"},
		"a/#":     {"mqtt.a", "mqtt.a.>"},
		"+/a.b/#": {"mqtt.*.a%2Eb", "mqtt.*.a%2Eb.>"},
		"a/b*":    {"mqtt.a.b%2A"},
	} {
		if got := FilterSubjects("mqtt", filter); !slices.Equal(got, want) {
			t.Errorf("FilterSubjects(%q) = %q, want %q", filter, got, want)
		}
	}
}

func FuzzSubjectRoundTrip(f *testing.F) {
	f.Add("a/b")
	f.Add("a. *>%/ /")
	f.Fuzz(func(t *testing.T, topic string) {
		back, err := SubjectTopic("mqtt", TopicSubject("mqtt", topic))
		if containsNUL(topic) {
			return
		}
		if err != nil || back != topic {
			t.Fatalf("%q -> %q, %v", topic, back, err)
		}
	})
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

func TestDedupWindow(t *testing.T) {
	d := dedup{bySource: map[string]*window{}}
	if d.seen("n1/x", 1) || !d.seen("n1/x", 1) || d.seen("n2/y", 1) {
		t.Fatal("first copy dropped or second kept")
	}
	for i := uint64(2); i < 3*windowSize; i++ {
		if d.seen("n1/x", i) {
			t.Fatalf("seq %d dropped", i)
		}
	}
	if len(d.bySource["n1/x"].seen) > 2*windowSize+1 {
		t.Fatalf("window grows: %d", len(d.bySource["n1/x"].seen))
	}
}
