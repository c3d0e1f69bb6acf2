// Package web holds Polydev's browser code — plain ES modules and pages
// served as they are, with no build step — and embeds it into the binary.
//
// crypto/polydev-crypto.js is the browser implementation of docs/crypto.md;
// vendor/ holds its pinned third-party bundles (see vendor/refresh.sh);
// test/ holds the Node and browser tests, which are not served.
package web

import "embed"

// Assets is the served part of web/: the pages, the crypto module and the
// vendored bundles.
//
//go:embed index.html app.js crypto/*.js vendor/*.js
var Assets embed.FS
