package cluster

import (
	"encoding/base64"
	"net/url"
	"strconv"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
)

// NATS headers carrying what an MQTT PUBLISH has besides its topic (the
// subject) and payload (the NATS payload, untouched), so NATS clients can
// read and write cluster traffic too.
const (
	hdrSource        = "Mqtt-Source" // "<node>/<boot>": the node that published it
	hdrSeq           = "Mqtt-Seq"    // per source, to drop a copy per overlapping subscription
	hdrQoS           = "Mqtt-Qos"
	hdrRetain        = "Mqtt-Retain"
	hdrContentType   = "Mqtt-Content-Type"
	hdrResponseTopic = "Mqtt-Response-Topic"
	hdrCorrelation   = "Mqtt-Correlation-Data" // base64 (standard, padded)
	hdrPayloadFormat = "Mqtt-Payload-Format"
	hdrExpiry        = "Mqtt-Message-Expiry" // seconds left when published
	hdrUser          = "Mqtt-User"           // one per user property, "key=value", both query-escaped
)

// encodeHeader writes pk's QoS, retain flag and MQTT 5 properties.
func encodeHeader(h nats.Header, pk *packets.Packet, now time.Time) {
	h.Set(hdrQoS, strconv.Itoa(int(pk.FixedHeader.Qos)))
	if pk.FixedHeader.Retain {
		h.Set(hdrRetain, "1")
	}
	p := &pk.Properties
	if p.ContentType != "" {
		h.Set(hdrContentType, p.ContentType)
	}
	if p.ResponseTopic != "" {
		h.Set(hdrResponseTopic, p.ResponseTopic)
	}
	if len(p.CorrelationData) > 0 {
		h.Set(hdrCorrelation, base64.StdEncoding.EncodeToString(p.CorrelationData))
	}
	if p.PayloadFormatFlag {
		h.Set(hdrPayloadFormat, strconv.Itoa(int(p.PayloadFormat)))
	}
	if left := expiryLeft(pk, now); left > 0 {
		h.Set(hdrExpiry, strconv.FormatInt(left, 10))
	}
	for _, u := range p.User {
		h.Add(hdrUser, url.QueryEscape(u.Key)+"="+url.QueryEscape(u.Val))
	}
}

// expiryLeft is the number of seconds pk has left (0: no expiry).
func expiryLeft(pk *packets.Packet, now time.Time) int64 {
	if pk.Expiry > 0 {
		return max(pk.Expiry-now.Unix(), 1)
	}
	return int64(pk.Properties.MessageExpiryInterval)
}

// decodeHeader is the inverse of encodeHeader. Values it cannot read are
// ignored rather than failing the message.
func decodeHeader(h nats.Header, pk *packets.Packet) {
	if q, err := strconv.Atoi(h.Get(hdrQoS)); err == nil && q >= 0 && q <= 2 {
		pk.FixedHeader.Qos = byte(q)
	}
	pk.FixedHeader.Retain = h.Get(hdrRetain) == "1"
	p := &pk.Properties
	p.ContentType = h.Get(hdrContentType)
	p.ResponseTopic = h.Get(hdrResponseTopic)
	if v := h.Get(hdrCorrelation); v != "" {
		p.CorrelationData, _ = base64.StdEncoding.DecodeString(v)
	}
	if f, err := strconv.Atoi(h.Get(hdrPayloadFormat)); err == nil && (f == 0 || f == 1) {
		p.PayloadFormat, p.PayloadFormatFlag = byte(f), true
	}
	if e, err := strconv.ParseUint(h.Get(hdrExpiry), 10, 32); err == nil {
		p.MessageExpiryInterval = uint32(e)
	}
	for _, kv := range h.Values(hdrUser) {
		k, v, _ := cutEq(kv)
		ku, err1 := url.QueryUnescape(k)
		vu, err2 := url.QueryUnescape(v)
		if err1 == nil && err2 == nil {
			p.User = append(p.User, packets.UserProperty{Key: ku, Val: vu})
		}
	}
}

func cutEq(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '=' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
