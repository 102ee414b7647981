// node configurable-http-proxy (CHP), run unchanged but for one thing: a request
// whose path has a %-escape that does not decode (`%ff`, `%E0%A4%A`) is routed
// instead of answered with a 500.
//
// CHP 5.x finds a request's route with decodeURIComponent(path) and answers the
// URIError it throws for such a path with a 500 (its --error-target, JupyterHub's
// error page). Here a path that does not decode is routed with its undecodable
// segments as they were sent (the others decoded, as CHP does): the hub, or the
// server behind the route, gets the request and answers it (a 400 or a 404).
//
// Usage: node configurable-http-proxy.mjs [CHP's options]. CHP is the
// `configurable-http-proxy` command on PATH (npm's node_modules/.bin, or a global
// `npm install -g configurable-http-proxy`), skipping anything that is not node
// CHP (the Python port installs a command of the same name).

import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const COMMAND = "configurable-http-proxy";

function findCHP() {
  for (const dir of (process.env.PATH || "").split(path.delimiter)) {
    if (!dir) continue;
    let bin;
    try {
      bin = fs.realpathSync(path.join(dir, COMMAND));
    } catch {
      continue;
    }
    const lib = path.join(path.dirname(bin), "..", "lib", "configproxy.js");
    if (fs.existsSync(lib)) return { bin, lib };
  }
  console.error(
    `${COMMAND} (node) is not on PATH: install it with \`npm ci\` in uws-hub's checkout ` +
      `(node_modules/.bin on PATH) or \`npm install -g ${COMMAND}\``,
  );
  process.exit(1);
}

// the path with every segment that does not decode escaped once more ("%" as "%25"),
// so that CHP's decodeURIComponent gives that segment back as it was sent
function decodablePath(url) {
  const { pathname } = new URL(url, "http://example.com");
  return pathname
    .split("/")
    .map((segment) => {
      try {
        decodeURIComponent(segment);
        return segment;
      } catch {
        return segment.replaceAll("%", "%25");
      }
    })
    .join("/");
}

const chp = findCHP();
const { default: ConfigurableProxy } = await import(pathToFileURL(chp.lib).href);
const targetForReq = ConfigurableProxy.prototype.targetForReq;
ConfigurableProxy.prototype.targetForReq = async function (req) {
  try {
    return await targetForReq.call(this, req);
  } catch (e) {
    if (!(e instanceof URIError)) throw e;
    // the request itself (its URL, proxied as sent) is unchanged
    const routed = Object.create(req, { url: { value: decodablePath(req.url) } });
    return targetForReq.call(this, routed);
  }
};
await import(pathToFileURL(chp.bin).href);
