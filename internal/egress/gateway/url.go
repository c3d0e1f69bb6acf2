package gateway

import "net/url"

type urlT = url.URL

// gatewayURL names the proxy for net/http; the host part is never resolved,
// since Client's dialer always connects to the socket.
var gatewayURL = &url.URL{Scheme: "http", Host: "egress-gateway"}
