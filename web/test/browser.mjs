// Runs in headless Chromium (internal/crypto/browser_test.go): checks every
// shared vector and a set of Go-made fresh cases with the browser module,
// makes fresh cases of its own, and posts everything back to the test.
import { checkAll, makeVectors } from "./vectors.mjs";

const out = document.getElementById("out");
async function main() {
  const report = { userAgent: navigator.userAgent, groups: {} };
  for (const [name, url] of [["shared", "/testdata/vectors.json"], ["go_made", "/go-made.json"]]) {
    const file = await (await fetch(url)).json();
    const results = await checkAll(file);
    report.groups[name] = {
      total: results.length,
      failures: results.filter((r) => r.error).map((r) => `${r.group} / ${r.name}: ${r.error.message}`),
    };
  }
  report.made = await makeVectors();
  return report;
}
main()
  .catch((e) => ({ fatal: `${e.name}: ${e.message}\n${e.stack}` }))
  .then(async (report) => {
    out.textContent = "done";
    await fetch("/result", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(report) });
  });
