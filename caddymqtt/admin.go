package caddymqtt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI is the admin.api.mqtt module: the broker's routes on Caddy's
// admin endpoint, behind the same listener, origin checks and remote-admin
// access control as the rest of it.
//
//	GET    /mqtt/clients                list sessions
//	GET    /mqtt/clients/{id}           one session, with its subscriptions
//	DELETE /mqtt/clients/{id}           disconnect (MQTT 5: reason 0x98);
//	                                    ?session=discard also drops the session
//	GET    /mqtt/retained?filter=a/#    retained messages matching filter
//	DELETE /mqtt/retained/{topic}       remove a retained message
//	POST   /mqtt/publish                publish a message (JSON body)
//
// Ids and topics in the path are URL-escaped ("a%2Fb" for "a/b" is
// accepted; so is a plain "a/b" for topics).
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.mqtt",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the /mqtt/ routes.
func (a adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/mqtt/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func apiError(status int, err error) error {
	return caddy.APIError{HTTPStatus: status, Err: err}
}

// runningBroker is the broker of the loaded config, if it has started.
func runningBroker() (*broker.Broker, error) {
	var b *broker.Broker
	brokers.Range(func(_, v any) bool {
		b = v.(*sharedBroker).current()
		return false
	})
	if b == nil {
		return nil, apiError(http.StatusServiceUnavailable, errors.New("the mqtt app is not running"))
	}
	return b, nil
}

func (a adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	b, err := runningBroker()
	if err != nil {
		return err
	}
	rest, _ := strings.CutPrefix(r.URL.EscapedPath(), "/mqtt/")
	route, arg, hasArg := strings.Cut(rest, "/")
	if hasArg {
		if arg, err = url.PathUnescape(arg); err != nil {
			return apiError(http.StatusBadRequest, err)
		}
	}
	switch {
	case route == "clients" && !hasArg:
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, "GET")
		}
		list := b.ClientList()
		if list == nil {
			list = []broker.ClientInfo{}
		}
		return writeJSON(w, http.StatusOK, list)
	case route == "clients":
		return a.client(w, r, b, arg)
	case route == "retained" && !hasArg:
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, "GET")
		}
		filter := r.URL.Query().Get("filter")
		if filter == "" {
			filter = "#"
		}
		list, err := b.Retained(filter)
		if err != nil {
			return apiError(http.StatusBadRequest, fmt.Errorf("filter: %w", err))
		}
		return writeJSON(w, http.StatusOK, list)
	case route == "retained":
		if r.Method != http.MethodDelete {
			return methodNotAllowed(w, "DELETE")
		}
		switch err := b.DeleteRetained(arg); {
		case errors.Is(err, broker.ErrNoRetained):
			return apiError(http.StatusNotFound, err)
		case err != nil:
			return apiError(http.StatusBadRequest, fmt.Errorf("topic: %w", err))
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	case route == "publish" && !hasArg:
		if r.Method != http.MethodPost {
			return methodNotAllowed(w, "POST")
		}
		return a.publish(w, r, b)
	}
	return apiError(http.StatusNotFound, fmt.Errorf("no such mqtt admin route: %s", r.URL.Path))
}

func (adminAPI) client(w http.ResponseWriter, r *http.Request, b *broker.Broker, id string) error {
	switch r.Method {
	case http.MethodGet:
		ci, err := b.Client(id)
		if err != nil {
			return apiError(http.StatusNotFound, fmt.Errorf("client %q: %w", id, err))
		}
		return writeJSON(w, http.StatusOK, ci)
	case http.MethodDelete:
		var discard bool
		switch s := r.URL.Query().Get("session"); s {
		case "", "keep":
		case "discard":
			discard = true
		default:
			return apiError(http.StatusBadRequest, fmt.Errorf("session=%q: want keep or discard", s))
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		switch err := b.Kick(ctx, id, discard); {
		case errors.Is(err, broker.ErrUnknownClient):
			return apiError(http.StatusNotFound, fmt.Errorf("client %q: %w", id, err))
		case errors.Is(err, broker.ErrNotConnected):
			return apiError(http.StatusConflict, fmt.Errorf("client %q: %w (use ?session=discard to drop its session)", id, err))
		case err != nil:
			return apiError(http.StatusInternalServerError, err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return methodNotAllowed(w, "GET, DELETE")
}

// PublishRequest is the body of POST /mqtt/publish.
type PublishRequest struct {
	Topic string `json:"topic"`
	// The payload as text (UTF-8), or with "encoding": "base64" as base64.
	Payload  string `json:"payload"`
	Encoding string `json:"encoding,omitempty"`
	QoS      byte   `json:"qos"`
	Retain   bool   `json:"retain"`
	// MQTT 5 properties, delivered to MQTT 5 subscribers.
	Properties *PublishProperties `json:"properties,omitempty"`
}

// PublishProperties are the MQTT 5 PUBLISH properties the API sets.
type PublishProperties struct {
	ContentType            string         `json:"content_type,omitempty"`
	ResponseTopic          string         `json:"response_topic,omitempty"`
	CorrelationData        string         `json:"correlation_data,omitempty"` // base64
	MessageExpiryInterval  uint32         `json:"message_expiry_interval,omitempty"`
	PayloadFormatIndicator *byte          `json:"payload_format_indicator,omitempty"`
	UserProperties         []UserProperty `json:"user_properties,omitempty"`
}

// UserProperty is one MQTT 5 user property.
type UserProperty struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func (adminAPI) publish(w http.ResponseWriter, r *http.Request, b *broker.Broker) error {
	// Base64 takes 4/3 of the payload; anything much larger than the packet
	// limit is refused without reading it all.
	limit := int64(b.Options().MaxPacketSize)*2 + 64<<10
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return apiError(http.StatusRequestEntityTooLarge, fmt.Errorf("%w: request body over %d bytes", broker.ErrTooLarge, limit))
	}
	if err != nil {
		return apiError(http.StatusBadRequest, err)
	}
	var req PublishRequest
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return apiError(http.StatusBadRequest, fmt.Errorf("decoding request: %w", err))
	}
	m, err := req.message()
	if err != nil {
		return apiError(http.StatusBadRequest, err)
	}
	switch err := b.Publish(m); {
	case errors.Is(err, broker.ErrTooLarge):
		return apiError(http.StatusRequestEntityTooLarge, err)
	case err != nil:
		return apiError(http.StatusBadRequest, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (req PublishRequest) message() (broker.AdminMessage, error) {
	m := broker.AdminMessage{Topic: req.Topic, QoS: req.QoS, Retain: req.Retain}
	if err := broker.ValidPublishTopic(req.Topic); err != nil {
		return m, fmt.Errorf("topic %q: %w", req.Topic, err)
	}
	if req.QoS > 2 {
		return m, fmt.Errorf("qos %d: must be 0, 1 or 2", req.QoS)
	}
	switch req.Encoding {
	case "", "utf-8", "utf8":
		m.Payload = []byte(req.Payload)
	case "base64":
		p, err := base64.StdEncoding.DecodeString(req.Payload)
		if err != nil {
			return m, fmt.Errorf("payload: %w", err)
		}
		m.Payload = p
	default:
		return m, fmt.Errorf("encoding %q: want utf-8 or base64", req.Encoding)
	}
	if p := req.Properties; p != nil {
		props := &m.Properties
		props.ContentType = p.ContentType
		if p.ResponseTopic != "" {
			if err := broker.ValidPublishTopic(p.ResponseTopic); err != nil {
				return m, fmt.Errorf("response_topic: %w", err)
			}
			props.ResponseTopic = p.ResponseTopic
		}
		if p.CorrelationData != "" {
			cd, err := base64.StdEncoding.DecodeString(p.CorrelationData)
			if err != nil {
				return m, fmt.Errorf("correlation_data (base64): %w", err)
			}
			props.CorrelationData = cd
		}
		props.MessageExpiryInterval = p.MessageExpiryInterval
		if f := p.PayloadFormatIndicator; f != nil {
			if *f > 1 {
				return m, errors.New("payload_format_indicator: must be 0 or 1")
			}
			if *f == 1 && !utf8.Valid(m.Payload) {
				return m, errors.New("payload_format_indicator 1 needs a UTF-8 payload") // [MQTT-3.3.2-6]
			}
			props.PayloadFormat, props.PayloadFormatFlag = *f, true
		}
		for _, u := range p.UserProperties {
			if !utf8.ValidString(u.Key) || !utf8.ValidString(u.Value) {
				return m, errors.New("user_properties: keys and values must be UTF-8")
			}
			props.User = append(props.User, packets.UserProperty{Key: u.Key, Val: u.Value})
		}
	}
	return m, nil
}

func methodNotAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	return apiError(http.StatusMethodNotAllowed, errors.New("method not allowed"))
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// Interface guards
var _ caddy.AdminRouter = adminAPI{}
