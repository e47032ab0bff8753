package caddymqtt

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-mqtt/caddy-mqtt/broker"
)

// The admin API commands: caddy mqtt clients | kick | pub. Like `caddy
// reload` and `caddy stop` they reach the admin endpoint given by
// --address, or else the one named in --config, or else the default
// (localhost:2019).

// adminFlags are the flags every admin command takes.
type adminFlags struct{ address, config, adapter string }

func (f *adminFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.address, "address", "", "The address to use to reach the admin API endpoint, if not the default")
	c.Flags().StringVarP(&f.config, "config", "c", "", "Configuration file to use to parse the admin address, if --address is not used")
	c.Flags().StringVarP(&f.adapter, "adapter", "a", "", "Name of config adapter to apply (when --config is used)")
}

// request calls the admin API; an error status becomes an error carrying
// the API's message.
func (f *adminFlags) request(method, uri string, body any) ([]byte, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(f.address, nil, f.config, f.adapter)
	if err != nil {
		return nil, fmt.Errorf("couldn't determine admin API address: %v", err)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, nil, rd)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func clientsCommand() *cobra.Command {
	var f adminFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "clients [--address <interface>] [--json]",
		Short: "Lists the MQTT sessions of a running Caddy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := f.request(http.MethodGet, "/mqtt/clients", nil)
			if err != nil {
				return err
			}
			if asJSON {
				_, err := cmd.OutOrStdout().Write(body)
				return err
			}
			var list []broker.ClientInfo
			if err := json.Unmarshal(body, &list); err != nil {
				return err
			}
			return printClients(cmd.OutOrStdout(), list, time.Now())
		},
	}
	f.add(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON instead of a table")
	return c
}

func printClients(out io.Writer, list []broker.ClientInfo, now time.Time) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT ID\tUSERNAME\tDOOR\tREMOTE\tPROTO\tCONNECTED\tSUBS\tINFLIGHT\tQUEUED")
	for _, c := range list {
		since := "no"
		if c.ConnectedSince != nil {
			since = now.Sub(*c.ConnectedSince).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", printable(c.ID), orDash(printable(c.Username)),
			c.Door, c.Remote, protoName(c.Protocol), since, c.Subscriptions, c.Inflight, c.Queued)
	}
	return tw.Flush()
}

// printable keeps a client-chosen string from moving the terminal's cursor.
func printable(s string) string {
	q := fmt.Sprintf("%q", s)
	if q[1:len(q)-1] == s && !strings.ContainsAny(s, " \t") {
		return s
	}
	return q
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func protoName(v int) string {
	switch v {
	case 3:
		return "3.1"
	case 4:
		return "3.1.1"
	case 5:
		return "5"
	}
	return fmt.Sprint(v)
}

func kickCommand() *cobra.Command {
	var f adminFlags
	var discard bool
	c := &cobra.Command{
		Use:   "kick [--address <interface>] [--discard] <client id>",
		Short: "Disconnects an MQTT client (MQTT 5: reason 0x98, administrative action)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			uri := "/mqtt/clients/" + url.PathEscape(args[0])
			if discard {
				uri += "?session=discard"
			}
			if _, err := f.request(http.MethodDelete, uri, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "disconnected %s\n", printable(args[0]))
			return nil
		},
	}
	f.add(c)
	c.Flags().BoolVar(&discard, "discard", false, "also drop the client's persistent session")
	return c
}

func pubCommand() *cobra.Command {
	var f adminFlags
	var req PublishRequest
	var b64 bool
	var userProps []string
	var props PublishProperties
	c := &cobra.Command{
		Use:   "pub [--address <interface>] [-q <qos>] [-r] [--base64] <topic> <payload>",
		Short: "Publishes an MQTT message through a running Caddy",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Topic, req.Payload = args[0], args[1]
			if b64 {
				if _, err := base64.StdEncoding.DecodeString(req.Payload); err != nil {
					return fmt.Errorf("payload is not base64: %v", err)
				}
				req.Encoding = "base64"
			}
			for _, kv := range userProps {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--user-property %q: want key=value", kv)
				}
				props.UserProperties = append(props.UserProperties, UserProperty{Key: k, Value: v})
			}
			if props.ContentType != "" || props.ResponseTopic != "" || props.MessageExpiryInterval > 0 || len(props.UserProperties) > 0 {
				req.Properties = &props
			}
			if _, err := f.request(http.MethodPost, "/mqtt/publish", req); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published %d bytes to %s (qos %d, retain %v)\n",
				payloadLen(req), printable(req.Topic), req.QoS, req.Retain)
			return nil
		},
	}
	f.add(c)
	c.Flags().Uint8VarP(&req.QoS, "qos", "q", 0, "QoS (0, 1 or 2)")
	c.Flags().BoolVarP(&req.Retain, "retain", "r", false, "retain the message")
	c.Flags().BoolVar(&b64, "base64", false, "the payload argument is base64")
	c.Flags().StringVar(&props.ContentType, "content-type", "", "MQTT 5 content type")
	c.Flags().StringVar(&props.ResponseTopic, "response-topic", "", "MQTT 5 response topic")
	c.Flags().Uint32Var(&props.MessageExpiryInterval, "expiry", 0, "MQTT 5 message expiry interval in seconds")
	c.Flags().StringArrayVar(&userProps, "user-property", nil, "MQTT 5 user property key=value (repeatable)")
	return c
}

func payloadLen(req PublishRequest) int {
	if req.Encoding == "base64" {
		b, _ := base64.StdEncoding.DecodeString(req.Payload)
		return len(b)
	}
	return len(req.Payload)
}
