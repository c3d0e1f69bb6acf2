// Command-line bridge for the Go ↔ JavaScript round-trip tests
// (internal/crypto/interop_test.go):
//
//   node web/test/interop.mjs check FILE   check every case of FILE (made by Go); exit 1 on any failure
//   node web/test/interop.mjs make FILE    write fresh cases made by this implementation to FILE
//
// Output is one line per group with counts, then a summary line.

import { readFileSync, writeFileSync } from "node:fs";
import { checkAll, makeVectors } from "./vectors.mjs";

const [cmd, file] = process.argv.slice(2);
if (cmd === "check" && file) {
  const results = await checkAll(JSON.parse(readFileSync(file, "utf8")));
  const failed = results.filter((r) => r.error);
  for (const r of failed) console.log(`FAIL ${r.group} / ${r.name}: ${r.error.message}`);
  console.log(`javascript checked ${results.length} cases: ${results.length - failed.length} passed, ${failed.length} failed`);
  process.exit(failed.length || results.length === 0 ? 1 : 0);
} else if (cmd === "make" && file) {
  const f = await makeVectors();
  writeFileSync(file, JSON.stringify(f, null, 2) + "\n");
  const n = Object.values(f).filter(Array.isArray).reduce((a, g) => a + g.length, 0);
  console.log(`javascript made ${n} cases`);
} else {
  console.error("usage: interop.mjs check|make FILE");
  process.exit(2);
}
