//! Netlify-style `_redirects`: parsing (with line-numbered errors) and first-match lookup.
//!
//! Each line is `from [key=value …] to [status][!]`. Status 301/302/303/307/308 redirects,
//! 200 rewrites to another path of the same deployment, 404/410 serves `to` with that
//! status. A rule without `!` is shadowed by a file that exists at the request path.

use std::borrow::Cow;
use std::fmt::Write;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::RulesError;
use super::pattern::{Captures, PathPattern, is_placeholder_name};

/// More rules than this fail the build: the list is scanned in order for unmatched paths.
pub const MAX_RULES: usize = 10_000;
/// The file's name in a deployment.
pub const FILE: &str = "_redirects";

/// Characters escaped when a decoded path or a captured value goes into a `Location` (a
/// splat keeps its `/`).
pub const LOCATION_SET: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%');

/// Characters escaped in a redirect target's literal text: it goes into a header as is,
/// so controls, spaces and non-ASCII are encoded (`%` stays: the author may have encoded).
const LITERAL_SET: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'<').add(b'>').add(b'`');

/// A request condition of a rule (Netlify's `Language=`, `Cookie=`, `Country=`): the rule
/// applies only when the request matches one of the values.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    /// Languages the client accepts (`Accept-Language`), by tag or primary subtag.
    Language(Box<[Box<str>]>),
    /// Cookies the request carries, by name.
    Cookie(Box<[Box<str>]>),
    /// The client's country (ISO 3166 alpha-2), from the trusted header the operator names.
    Country(Box<[Box<str>]>),
}

/// Which request headers an answer depended on through rule conditions (its `Vary`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vary {
    /// `Accept-Language`.
    pub language: bool,
    /// `Cookie`.
    pub cookie: bool,
    /// The country header.
    pub country: bool,
}

impl Vary {
    /// Whether the answer depended on any.
    pub fn any(&self) -> bool {
        self.language || self.cookie || self.country
    }
}

/// What rule conditions are checked against: the request's headers, and which of them
/// carries the client's country (`None`: no country source configured).
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The request headers.
    pub headers: &'a http::HeaderMap,
    /// The trusted header naming the client's country.
    pub country: Option<&'a http::HeaderName>,
}

impl Condition {
    fn parse(key: &str, value: &str) -> Option<Result<Self, String>> {
        // Comma-separated, any one matching; languages and countries case-insensitive,
        // cookie names exact.
        let values = |fold: bool| -> Result<Box<[Box<str>]>, String> {
            let v: Vec<Box<str>> = value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    if fold {
                        v.to_ascii_lowercase()
                    } else {
                        v.to_owned()
                    }
                    .into()
                })
                .collect();
            if v.is_empty() {
                return Err(format!("{key}= needs at least one value"));
            }
            Ok(v.into())
        };
        Some(match key.to_ascii_lowercase().as_str() {
            "language" => values(true).map(Condition::Language),
            "cookie" => values(false).map(Condition::Cookie),
            "country" => values(true).map(Condition::Country),
            "role" => Err(
                "Role= conditions need Netlify Identity's signed roles, which Halo does not have; protect the site with `protection` instead".into(),
            ),
            _ => return None,
        })
    }

    fn matches(&self, facts: &Facts<'_>) -> bool {
        match self {
            Condition::Language(want) => facts
                .headers
                .get_all(http::header::ACCEPT_LANGUAGE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|entry| {
                    let mut parts = entry.split(';');
                    let tag = parts.next()?.trim().to_ascii_lowercase();
                    let refused = parts.any(|p| {
                        p.trim()
                            .strip_prefix("q=")
                            .and_then(|q| q.trim().parse::<f32>().ok())
                            == Some(0.0)
                    });
                    (!tag.is_empty() && !refused).then_some(tag)
                })
                .any(|tag| {
                    want.iter().any(|w| {
                        tag == **w
                            || tag
                                .strip_prefix(&**w)
                                .is_some_and(|rest| rest.starts_with('-'))
                    })
                }),
            Condition::Cookie(names) => facts
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| Some(c.split_once('=')?.0.trim()))
                .any(|n| names.iter().any(|w| **w == *n)),
            Condition::Country(want) => facts
                .country
                .and_then(|h| facts.headers.get(h))
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| {
                    let c = c.trim().to_ascii_lowercase();
                    want.iter().any(|w| **w == c)
                }),
        }
    }

    fn mark(&self, vary: &mut Vary) {
        match self {
            Condition::Language(_) => vary.language = true,
            Condition::Cookie(_) => vary.cookie = true,
            Condition::Country(_) => vary.country = true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum QueryValue {
    Exact(Box<str>),
    Param(Box<str>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<str>),
    Var(Box<str>),
}

/// One parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectRule {
    /// Line in `_redirects` (1-based), for logs.
    pub line: usize,
    from: PathPattern,
    query: Box<[(Box<str>, QueryValue)]>,
    conditions: Box<[Condition]>,
    to: Box<[Part]>,
    to_has_query: bool,
    /// HTTP status of the rule.
    pub status: u16,
    /// `!`: applies even where a file exists.
    pub force: bool,
    /// A proxy rewrite (200 to another origin).
    proxy: bool,
}

/// What a matching rule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the client to `location` with a 3xx status.
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: u16,
        /// Absolute path or URL, query included.
        location: String,
    },
    /// Forward the request to `url` (a proxy rewrite: status 200 to another origin) and
    /// stream its answer back.
    Proxy {
        /// The upstream URL, query included.
        url: String,
    },
    /// Serve the file at `path` (decoded, absolute) with `status` (200, 404, 410).
    Rewrite {
        /// Status to answer with.
        status: u16,
        /// The deployment path to serve.
        path: String,
    },
}

/// Every rule of a deployment, in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Redirects {
    rules: Vec<RedirectRule>,
    any_forced: bool,
    any_query: bool,
    any_country: bool,
}

fn is_status(tok: &str) -> bool {
    let t = tok.strip_suffix('!').unwrap_or(tok);
    t.len() == 3 && t.bytes().all(|b| b.is_ascii_digit())
}

fn is_target(tok: &str) -> bool {
    tok.starts_with('/') || tok.starts_with("http://") || tok.starts_with("https://")
}

/// The origin of a proxy target, when no placeholder is part of it.
fn proxy_origin(to: &str) -> Option<&str> {
    let origin = crate::model::settings::url_origin(to)?;
    let parts = parse_target(to);
    match parts.first() {
        // The literal text before any placeholder holds the whole authority.
        Some(Part::Literal(l))
            if l.len() > origin.len() || (l.len() == origin.len() && parts.len() == 1) =>
        {
            // A port is digits: `https://h:port` would be a placeholder, caught above.
            Some(origin)
        }
        _ => None,
    }
}

/// Splits `to` at `:name` placeholders (a `:` followed by a digit stays literal: a port).
fn parse_target(to: &str) -> Box<[Part]> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = to;
    while let Some(i) = rest.find(':') {
        lit.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..end];
        if is_placeholder_name(name) {
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit).into()));
            }
            parts.push(Part::Var(name.into()));
            rest = &after[end..];
        } else {
            lit.push(':');
            rest = after;
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        parts.push(Part::Literal(lit.into()));
    }
    parts.into()
}

fn parse_line(line: &str) -> Result<Option<RedirectRule>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut tokens: Vec<&str> = line.split_whitespace().collect();
    // An inline comment (`/old /new 301 # moved in 2023`) ends the rule, as on Netlify.
    if let Some(at) = tokens.iter().skip(1).position(|t| t.starts_with('#')) {
        tokens.truncate(at + 1);
    }
    let from = PathPattern::parse(tokens[0])?;
    let mut i = 1;
    let mut query = Vec::new();
    let mut conditions = Vec::new();
    while i < tokens.len() && !is_target(tokens[i]) {
        let Some((k, v)) = tokens[i].split_once('=') else {
            return Err(format!(
                "expected a target path or URL after {:?}, found {:?}",
                tokens[0], tokens[i]
            ));
        };
        if k.is_empty() {
            return Err(format!("query condition {:?} has no name", tokens[i]));
        }
        if let Some(c) = Condition::parse(k, v) {
            conditions.push(c?);
            i += 1;
            continue;
        }
        let value = match v.strip_prefix(':') {
            Some(name) if is_placeholder_name(name) => QueryValue::Param(name.into()),
            _ => QueryValue::Exact(v.into()),
        };
        query.push((k.into(), value));
        i += 1;
    }
    let Some(to) = tokens.get(i) else {
        return Err(format!("rule for {:?} has no target", tokens[0]));
    };
    i += 1;
    let (status, force) = match tokens.get(i) {
        Some(t) if is_status(t) => {
            i += 1;
            let force = t.ends_with('!');
            let code: u16 = t.trim_end_matches('!').parse().expect("three digits");
            (code, force)
        }
        Some(t) if *t == "!" => {
            i += 1;
            (301, true)
        }
        Some(t) => {
            return Err(format!(
                "expected a status code after the target, found {t:?}"
            ));
        }
        None => (301, false),
    };
    // Netlify also takes conditions after the status (`/ /fr 302 Language=fr`).
    while let Some(t) = tokens.get(i) {
        let Some(c) = t.split_once('=').and_then(|(k, v)| Condition::parse(k, v)) else {
            return Err(if t.contains('=') {
                format!(
                    "conditions such as {t:?} are not supported (Language=, Cookie=, Country= are)"
                )
            } else {
                format!("unexpected {t:?} after the status")
            });
        };
        conditions.push(c?);
        i += 1;
    }
    let external = !to.starts_with('/');
    match status {
        301 | 302 | 303 | 307 | 308 => {}
        200 if external => {
            // A proxy rewrite: its origin must be literal, so the build can check it
            // against the project's allow-list.
            if proxy_origin(to).is_none() {
                return Err(format!(
                    "{to:?}: a proxy target needs a literal origin (https://host[:port]/…)"
                ));
            }
        }
        404 | 410 if external => {
            return Err(format!(
                "status {status} to another origin is not supported; use a redirect (301/302/307/308) or a proxy (200)"
            ));
        }
        200 | 404 | 410 => {}
        other => {
            return Err(format!(
                "status {other} is not supported (use 200, 301, 302, 303, 307, 308, 404 or 410)"
            ));
        }
    }
    let to_parts = parse_target(to);
    let names: Vec<&str> = from
        .param_names()
        .chain(query.iter().filter_map(|(_, v)| match v {
            QueryValue::Param(n) => Some(&**n),
            QueryValue::Exact(_) => None,
        }))
        .collect();
    for p in to_parts.iter() {
        if let Part::Var(n) = p {
            let known = names.contains(&&**n) || (&**n == "splat" && from.has_splat());
            if !known {
                return Err(format!(
                    "target uses :{n}, which the rule's path and query do not bind"
                ));
            }
        }
    }
    Ok(Some(RedirectRule {
        line: 0,
        from,
        query: query.into(),
        conditions: conditions.into(),
        to_has_query: to.contains('?'),
        to: to_parts,
        status,
        force,
        proxy: status == 200 && external,
    }))
}

/// Decoded `key=value` pairs of a query string.
fn query_pairs(query: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    fn decode(s: &str) -> Cow<'_, str> {
        if s.contains('+') {
            Cow::Owned(
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        } else {
            percent_decode_str(s).decode_utf8_lossy()
        }
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

impl Redirects {
    /// Parses a `_redirects` file.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let err = |message: String| RulesError {
                file: FILE,
                line: n + 1,
                message,
            };
            if let Some(mut rule) = parse_line(line).map_err(err)? {
                if rules.len() == MAX_RULES {
                    return Err(err(format!("more than {MAX_RULES} rules")));
                }
                rule.line = n + 1;
                rules.push(rule);
            }
        }
        Ok(Redirects {
            any_forced: rules.iter().any(|r| r.force),
            any_query: rules.iter().any(|r| !r.query.is_empty()),
            any_country: rules.iter().any(|r| {
                r.conditions
                    .iter()
                    .any(|c| matches!(c, Condition::Country(_)))
            }),
            rules,
        })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The origins of the rules that proxy (for the build's allow-list check), with each
    /// rule's line.
    pub fn proxy_origins(&self) -> impl Iterator<Item = (usize, String)> + '_ {
        self.rules.iter().filter(|r| r.proxy).filter_map(|r| {
            let Part::Literal(l) = r.to.first()? else {
                return None;
            };
            Some((r.line, proxy_origin(l)?.to_owned()))
        })
    }

    /// Whether any rule has a `Country=` condition (which needs a country source).
    pub fn any_country(&self) -> bool {
        self.any_country
    }

    /// Whether any rule can apply where a file exists.
    pub fn any_forced(&self) -> bool {
        self.any_forced
    }

    /// The first rule matching `host`, the decoded `path` and the raw `query`; `None` when
    /// nothing matches or when the match is shadowed by an existing file (`file_exists`
    /// and no `!`). The query string is passed on to redirect targets that have none.
    pub fn lookup(
        &self,
        host: &str,
        path: &str,
        query: Option<&str>,
        file_exists: bool,
    ) -> Option<Action> {
        self.lookup_with(host, path, query, file_exists, None, &mut Vary::default())
    }

    /// [`Redirects::lookup`] with the request's `facts` for rule conditions (`None`: no
    /// conditional rule matches); `vary` notes every condition a rule whose path and query
    /// matched was checked against, since the answer depends on it whether it held or not.
    pub fn lookup_with(
        &self,
        host: &str,
        path: &str,
        query: Option<&str>,
        file_exists: bool,
        facts: Option<&Facts<'_>>,
        vary: &mut Vary,
    ) -> Option<Action> {
        if self.rules.is_empty() || (file_exists && !self.any_forced) {
            return None;
        }
        let pairs = match query {
            Some(q) if self.any_query => query_pairs(q),
            _ => Vec::new(),
        };
        for rule in &self.rules {
            let Some(caps) = rule.from.matches(host, path) else {
                continue;
            };
            let mut query_ok = true;
            for (key, want) in rule.query.iter() {
                match (pairs.iter().find(|(k, _)| k == &**key), want) {
                    (Some((_, v)), QueryValue::Exact(w)) if v == &**w => {}
                    (Some(_), QueryValue::Param(_)) => {}
                    _ => {
                        query_ok = false;
                        break;
                    }
                }
            }
            if !query_ok {
                continue;
            }
            if !rule.conditions.is_empty() {
                rule.conditions.iter().for_each(|c| c.mark(vary));
                // Every condition holds (Netlify: all of them, any value of each).
                let holds = facts.is_some_and(|f| rule.conditions.iter().all(|c| c.matches(f)));
                if !holds {
                    continue;
                }
            }
            if file_exists && !rule.force {
                return None;
            }
            tracing::debug!(
                line = rule.line,
                status = rule.status,
                "_redirects rule matched"
            );
            return Some(rule.action(&caps, &pairs, query));
        }
        None
    }
}

impl RedirectRule {
    fn action(
        &self,
        caps: &Captures<'_>,
        pairs: &[(Cow<'_, str>, Cow<'_, str>)],
        query: Option<&str>,
    ) -> Action {
        // A proxy target is a URL, built as a redirect's is (query passed on).
        let redirect = (300..400).contains(&self.status) || self.proxy;
        let value = |name: &str| -> String {
            // Query placeholders are looked up in the request's query pairs.
            let from_query = self.query.iter().find_map(|(k, v)| match v {
                QueryValue::Param(n) if &**n == name => pairs
                    .iter()
                    .find(|(pk, _)| pk == &**k)
                    .map(|(_, pv)| pv.to_string()),
                _ => None,
            });
            from_query
                .or_else(|| caps.get(name).map(str::to_owned))
                .unwrap_or_default()
        };
        let mut out = String::new();
        for part in self.to.iter() {
            match part {
                Part::Literal(l) if redirect => {
                    let _ = write!(out, "{}", utf8_percent_encode(l, LITERAL_SET));
                }
                Part::Literal(l) => out.push_str(l),
                Part::Var(n) if redirect => {
                    let _ = write!(out, "{}", utf8_percent_encode(&value(n), LOCATION_SET));
                }
                Part::Var(n) => out.push_str(&value(n)),
            }
        }
        if redirect {
            if let Some(q) = query.filter(|q| !q.is_empty() && !self.to_has_query) {
                out.push('?');
                out.push_str(q);
            }
            if self.proxy {
                Action::Proxy { url: out }
            } else {
                Action::Redirect {
                    status: self.status,
                    location: out,
                }
            }
        } else {
            // An internal target's own query string has no file to select; drop it.
            if let Some(i) = out.find('?') {
                out.truncate(i);
            }
            Action::Rewrite {
                status: self.status,
                path: out,
            }
        }
    }
}
