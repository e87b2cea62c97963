// Netlify's redirects engine (@netlify/redirects) over a site directory: for each request
// of a JSON list (argv[3]), what Netlify would answer, in the form tests/netlify_diff.rs
// compares with Halo's edge. A rule applies where no file exists unless forced (`!`), as
// Netlify's handler decides with its static-file lookup; the engine's own `match` knows
// nothing of files, so that step is done here the same way.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { RedirectsHandler } from '@netlify/redirects';

const [site, requestsFile] = process.argv.slice(2);
const requests = JSON.parse(readFileSync(requestsFile, 'utf8'));
const isFile = (p) => existsSync(p) && statSync(p).isFile();
const fileAt = (path) => {
  const p = join(site, decodeURIComponent(path));
  return isFile(p) ? path : undefined;
};
const out = [];
for (const r of requests) {
  const handler = new RedirectsHandler({
    configRedirects: [],
    jwtRoleClaim: 'app_metadata.authorization.roles',
    jwtSecret: 'unused',
    projectDir: site,
    publicDir: site,
    geoCountry: r.country,
  });
  const url = new URL('http://site.test' + r.path);
  const m = await handler.match(new Request(url, { headers: r.headers ?? {} }));
  const file = fileAt(url.pathname);
  let o;
  if (m && (m.force || !file)) {
    if (m.redirect) {
      o = { status: m.statusCode, location: m.external ? m.target.href : m.targetRelative };
    } else {
      o = { status: m.statusCode, file: fileAt(new URL(m.targetRelative, url).pathname) ?? null };
    }
  } else if (file) {
    o = { status: 200, file };
  } else {
    o = { status: 404 };
  }
  out.push(o);
}
console.log(JSON.stringify(out));
