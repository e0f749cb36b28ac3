//! The Redis backend: one hash per entity, one pipelined round trip per fetch.
//!
//! Key layout: `{prefix}:{entity}:{id}` (for example `relish:venue:venue-1`) is a hash with one
//! field per feature name, and the reserved field `_tags` (a JSON array of strings). For every id
//! of a fetch the pipeline has:
//!
//! - `HMGET key name... [_tags]` for the exact names (and tags) of the field set, and
//! - for prefixes (`affinity.*`), a small Lua script ([`PREFIX_SCRIPT`]) that checks `HLEN` first
//!   and returns only the fields matching a prefix, so that a huge hash is refused on the server
//!   (`too-large`) and never transferred, and an oversized value is replaced by nil there too.
//!
//! Values are refused one by one ([`super::value`]); a key that is not a hash is refused whole
//! (`wrong-type`). Redis cannot tell a missing key from a hash with none of the requested names
//! in one `HMGET`: both answer [`Fetched::Absent`].
//!
//! Connections: the `redis` crate's [`ConnectionManager`], one multiplexed connection that is
//! remade when lost. It is made lazily, on the first fetch, so that startup never waits for Redis.
//! While Redis is unreachable the store is marked down and fails fetches at once
//! ([`StoreError::Unavailable`]) rather than letting every lookup wait for its deadline; one
//! fetch every [`PROBE_EVERY`] goes through to find out whether Redis is back, so lookups resume
//! within about that long after Redis does, without a restart.

use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{ErrorKind, RedisError, ServerErrorKind, Value};

use super::config::{Encoding, StoreConfig};
use super::value::{self, MAX_HASH_FIELDS, MAX_VALUE_BYTES, Refusal, Refusals};
use super::{Entity, FetchFuture, Fetched, FieldSet, Query, Store, StoreError, TAGS_FIELD};

/// While Redis is down, how often one fetch is let through to see if it is back.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// The prefix fetch: `KEYS[1]` the hash, `ARGV[1]` the most fields, `ARGV[2]` the longest value,
/// `ARGV[3..]` the prefixes. Answers 0 for a missing key, the field count for a hash with more
/// fields than allowed, else the matching `field, value` pairs, with nil for a value too long.
/// Reserved fields (`_...`) never match.
pub const PREFIX_SCRIPT: &str = r"
local n = redis.call('HLEN', KEYS[1])
if n == 0 then return 0 end
if n > tonumber(ARGV[1]) then return n end
local longest = tonumber(ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local field = all[i]
  if string.sub(field, 1, 1) ~= '_' then
    for j = 3, #ARGV do
      local prefix = ARGV[j]
      if string.sub(field, 1, #prefix) == prefix then
        out[#out + 1] = field
        if #all[i + 1] > longest then out[#out + 1] = false else out[#out + 1] = all[i + 1] end
        break
      end
    end
  end
end
return out
";

/// A Redis feature store.
pub struct RedisStore {
    client: ::redis::Client,
    /// Where, for messages (the URL without its password).
    address: String,
    manager: OnceLock<Result<ConnectionManager, String>>,
    prefix: String,
    encoding: Encoding,
    timeout: Duration,
    refusals: Refusals,
    health: Mutex<Health>,
}

/// Whether Redis answers.
#[derive(Default)]
struct Health {
    down: Option<Down>,
}

struct Down {
    since: Instant,
    /// When the next fetch is let through.
    probe_at: Instant,
    why: String,
}

impl RedisStore {
    /// A store at `config.url` (not connected until the first fetch); `refusals` counts the values
    /// it refuses. `name` is the store's name, for logs.
    pub fn new(name: &str, config: &StoreConfig, refusals: Refusals) -> anyhow::Result<Self> {
        let url = config.url.as_deref().ok_or_else(|| anyhow::anyhow!("url: is required with backend = \"redis\""))?;
        let client = ::redis::Client::open(url).map_err(|e| anyhow::anyhow!("url: is not a Redis URL: {e}"))?;
        let info = client.get_connection_info();
        let address = format!("{} (store `{name}`)", info.addr());
        Ok(RedisStore {
            client,
            address,
            manager: OnceLock::new(),
            prefix: config.prefix().to_owned(),
            encoding: config.encoding(),
            timeout: config.timeout(),
            refusals,
            health: Mutex::new(Health::default()),
        })
    }

    /// The connection manager, made on first use (it needs the runtime, which `new` may not have).
    fn manager(&self) -> Result<ConnectionManager, StoreError> {
        let made = self.manager.get_or_init(|| {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                // One attempt per reconnection: while Redis is down, `admit` paces the attempts.
                .set_number_of_retries(0);
            ConnectionManager::new_lazy_with_config(self.client.clone(), config).map_err(|e| e.to_string())
        });
        made.clone().map_err(StoreError::Failed)
    }

    /// Whether a fetch may go to Redis now: yes when it is up, and once per [`PROBE_EVERY`] when
    /// it is down.
    fn admit(&self) -> Result<(), StoreError> {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let Some(down) = &mut health.down else { return Ok(()) };
        let now = Instant::now();
        if now >= down.probe_at {
            down.probe_at = now + PROBE_EVERY;
            return Ok(());
        }
        Err(StoreError::Unavailable(format!(
            "Redis at {} is down ({} for {:.1} s); retrying every {} ms",
            self.address,
            down.why,
            down.since.elapsed().as_secs_f64(),
            PROBE_EVERY.as_millis()
        )))
    }

    fn answered(&self) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(down) = health.down.take() {
            tracing::info!(
                redis = %self.address,
                down_secs = down.since.elapsed().as_secs_f64(),
                "Redis answers again: feature lookups resume"
            );
        }
    }

    fn failed(&self, error: &RedisError) -> StoreError {
        if !is_connection_error(error) {
            return StoreError::Failed(error.to_string());
        }
        let why = error.to_string();
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match &mut health.down {
            Some(down) => down.why.clone_from(&why),
            None => {
                tracing::warn!(
                    redis = %self.address,
                    error = %why,
                    "Redis does not answer: feature lookups answer with cached (possibly expired) entries \
                     and report the rest missing until it does"
                );
                let now = Instant::now();
                health.down = Some(Down { since: now, probe_at: now + PROBE_EVERY, why: why.clone() });
            }
        }
        if error.is_timeout() {
            StoreError::Timeout
        } else {
            StoreError::Unavailable(format!("Redis at {}: {why}", self.address))
        }
    }

    /// The key of `id` of `entity`.
    fn key(&self, key: &mut String, entity: &str, id: &str) {
        key.clear();
        let _ = write!(key, "{}:{entity}:{id}", self.prefix);
    }

    fn pipeline(&self, batch: &[Query<'_>]) -> ::redis::Pipeline {
        let commands: usize = batch.iter().map(|q| q.ids.len() * commands(q.fields)).sum();
        let mut pipe = ::redis::Pipeline::with_capacity(commands);
        pipe.ignore_errors();
        let mut key = String::new();
        for query in batch {
            let fields = &**query.fields;
            for id in query.ids {
                self.key(&mut key, query.entity, id);
                if fields.is_empty() {
                    pipe.cmd("EXISTS").arg(&key);
                    continue;
                }
                if !fields.names.is_empty() || fields.tags {
                    pipe.cmd("HMGET").arg(&key).arg(&fields.names[..]);
                    if fields.tags {
                        pipe.arg(TAGS_FIELD);
                    }
                }
                if !fields.prefixes.is_empty() {
                    pipe.cmd("EVAL")
                        .arg(PREFIX_SCRIPT)
                        .arg(1)
                        .arg(&key)
                        .arg(MAX_HASH_FIELDS)
                        .arg(MAX_VALUE_BYTES)
                        .arg(&fields.prefixes[..]);
                }
            }
        }
        pipe
    }

    /// Reads the replies of [`Self::pipeline`] back into entities.
    fn decode(&self, batch: &[Query<'_>], replies: Vec<Value>) -> Result<Vec<Vec<Fetched>>, StoreError> {
        let expected: usize = batch.iter().map(|q| q.ids.len() * commands(q.fields)).sum();
        if replies.len() != expected {
            return Err(StoreError::Failed(format!("Redis answered {} replies for {expected}", replies.len())));
        }
        let mut replies = replies.into_iter();
        let mut out = Vec::with_capacity(batch.len());
        for query in batch {
            let fields = &**query.fields;
            let mut answers = Vec::with_capacity(query.ids.len());
            for id in query.ids {
                let mut entity = Entity { values: vec![f32::NAN; fields.names.len()].into(), ..Entity::default() };
                let context = Context { store: self, entity: query.entity, id };
                let mut found = false;
                if fields.is_empty() {
                    found = matches!(replies.next(), Some(Value::Int(n)) if n > 0);
                }
                if !fields.names.is_empty() || fields.tags {
                    match context.hash(replies.next().expect("counted"))? {
                        Some(Value::Array(items)) => found |= context.fields(fields, items, &mut entity)?,
                        Some(other) => return Err(unexpected("HMGET", &other)),
                        None => {}
                    }
                }
                if !fields.prefixes.is_empty() {
                    match context.hash(replies.next().expect("counted"))? {
                        Some(Value::Int(0)) | None => {}
                        Some(Value::Int(n)) => {
                            found = true;
                            context.refuse(&format!("{} fields", n), Refusal::TooLarge);
                        }
                        Some(Value::Array(pairs)) => {
                            found = true;
                            entity.prefixed = context.prefixed(pairs)?;
                        }
                        Some(other) => return Err(unexpected("the prefix script", &other)),
                    }
                }
                answers.push(if found { Fetched::Found(entity) } else { Fetched::Absent });
            }
            out.push(answers);
        }
        Ok(out)
    }
}

/// The number of commands per id for `fields`.
fn commands(fields: &FieldSet) -> usize {
    if fields.is_empty() {
        return 1;
    }
    usize::from(!fields.names.is_empty() || fields.tags) + usize::from(!fields.prefixes.is_empty())
}

fn unexpected(command: &str, value: &Value) -> StoreError {
    StoreError::Failed(format!("unexpected reply to {command}: {value:?}"))
}

/// Connection-level trouble (the store is down or unreachable), as opposed to an error reply.
fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_unrecoverable_error()
        || matches!(error.kind(), ErrorKind::Server(ServerErrorKind::BusyLoading | ServerErrorKind::MasterDown))
}

/// The entity being decoded, for refusals.
struct Context<'a> {
    store: &'a RedisStore,
    entity: &'a str,
    id: &'a str,
}

impl Context<'_> {
    fn refuse(&self, field: &str, why: Refusal) {
        self.store.refusals.refuse(self.entity, self.id, field, why);
    }

    /// The reply for a key, or `None` when the key is not a hash (refused); other error replies
    /// fail the fetch.
    fn hash(&self, reply: Value) -> Result<Option<Value>, StoreError> {
        match reply {
            Value::ServerError(error) => {
                if error.code() == "WRONGTYPE" || error.details().is_some_and(|d| d.contains("WRONGTYPE")) {
                    self.refuse("*", Refusal::WrongType);
                    Ok(None)
                } else {
                    Err(StoreError::Failed(format!("Redis answered an error: {error:?}")))
                }
            }
            other => Ok(Some(other)),
        }
    }

    /// Reads an `HMGET` reply into `entity`: whether any field was there.
    fn fields(&self, fields: &FieldSet, items: Vec<Value>, entity: &mut Entity) -> Result<bool, StoreError> {
        if items.len() != fields.names.len() + usize::from(fields.tags) {
            return Err(StoreError::Failed(format!("HMGET answered {} fields", items.len())));
        }
        let mut found = false;
        let mut items = items.into_iter();
        for (slot, name) in entity.values.iter_mut().zip(&fields.names) {
            match items.next().expect("counted") {
                Value::Nil => {}
                Value::BulkString(bytes) => {
                    found = true;
                    match value::parse(&bytes, self.store.encoding) {
                        Ok(value) => *slot = value,
                        Err(why) => self.refuse(name, why),
                    }
                }
                other => return Err(unexpected("HMGET", &other)),
            }
        }
        if fields.tags {
            match items.next().expect("counted") {
                Value::Nil => {}
                Value::BulkString(bytes) => {
                    found = true;
                    match value::parse_tags(&bytes) {
                        Ok(tags) => entity.tags = Some(tags),
                        Err(why) => self.refuse(TAGS_FIELD, why),
                    }
                }
                other => return Err(unexpected("HMGET", &other)),
            }
        }
        Ok(found)
    }

    /// Reads the prefix script's `field, value` pairs, sorted by name.
    fn prefixed(&self, pairs: Vec<Value>) -> Result<super::Prefixed, StoreError> {
        let mut out = Vec::with_capacity(pairs.len() / 2);
        let mut pairs = pairs.into_iter();
        while let (Some(field), Some(value)) = (pairs.next(), pairs.next()) {
            let Value::BulkString(field) = field else { return Err(unexpected("the prefix script", &field)) };
            let Ok(field) = String::from_utf8(field) else {
                // Not a name a policy can declare.
                continue;
            };
            match value {
                Value::Nil => self.refuse(&field, Refusal::TooLarge),
                Value::BulkString(bytes) => match value::parse(&bytes, self.store.encoding) {
                    Ok(value) => out.push((field.into_boxed_str(), value)),
                    Err(why) => self.refuse(&field, why),
                },
                other => return Err(unexpected("the prefix script", &other)),
            }
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into())
    }
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn fetch<'a>(&'a self, batch: &'a [Query<'a>]) -> FetchFuture<'a> {
        Box::pin(async move {
            if batch.iter().all(|q| q.ids.is_empty()) {
                return Ok(batch.iter().map(|_| Vec::new()).collect());
            }
            self.admit()?;
            let mut connection = self.manager()?;
            let pipe = self.pipeline(batch);
            match pipe.query_async::<Vec<Value>>(&mut connection).await {
                Ok(replies) => {
                    self.answered();
                    self.decode(batch, replies)
                }
                Err(error) => Err(self.failed(&error)),
            }
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::features::{CacheConfig, Features, LookupFailure};

    /// The machine's Redis, as the tests use it.
    pub(crate) const URL: &str = "redis://127.0.0.1:6379/0";

    /// A key prefix of the test's own, and a guard that deletes its keys when dropped.
    pub(crate) struct Prefix {
        pub(crate) prefix: String,
        url: String,
    }

    impl Prefix {
        pub(crate) fn new(url: &str) -> Self {
            let random = xxhash_rust::xxh3::xxh3_64(
                format!("{:?}{:?}", std::time::SystemTime::now(), std::thread::current().id()).as_bytes(),
            );
            Prefix { prefix: format!("relish-test-{random:016x}"), url: url.to_owned() }
        }

        pub(crate) fn connection(&self) -> ::redis::Connection {
            ::redis::Client::open(self.url.as_str()).unwrap().get_connection().unwrap()
        }

        /// Sets a hash field of `{prefix}:{entity}:{id}`.
        pub(crate) fn hset(&self, entity: &str, id: &str, fields: &[(&str, &[u8])]) {
            let mut cmd = ::redis::cmd("HSET");
            cmd.arg(format!("{}:{entity}:{id}", self.prefix));
            for (field, value) in fields {
                cmd.arg(*field).arg(*value);
            }
            cmd.exec(&mut self.connection()).unwrap();
        }
    }

    impl Drop for Prefix {
        fn drop(&mut self) {
            let Ok(client) = ::redis::Client::open(self.url.as_str()) else { return };
            let Ok(mut connection) = client.get_connection() else { return };
            let keys: Vec<String> =
                ::redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query(&mut connection).unwrap_or_default();
            for chunk in keys.chunks(1000) {
                let _ = ::redis::cmd("DEL").arg(chunk).exec(&mut connection);
            }
        }
    }

    pub(crate) fn config(url: &str, prefix: &str) -> StoreConfig {
        StoreConfig { prefix: Some(prefix.to_owned()), ..StoreConfig::redis(url) }
    }

    fn store(prefix: &Prefix, encoding: Encoding) -> RedisStore {
        let config = StoreConfig { encoding: Some(encoding), ..config(URL, &prefix.prefix) };
        RedisStore::new("test", &config, Refusals::detached("test")).unwrap()
    }

    async fn fetch(store: &RedisStore, entity: &str, fields: &FieldSet, ids: &[&str]) -> Vec<Fetched> {
        let fields = Arc::new(fields.clone());
        store.fetch(&[Query { entity, fields: &fields, ids }]).await.unwrap().pop().unwrap()
    }

    fn found(fetched: &Fetched) -> &Entity {
        match fetched {
            Fetched::Found(entity) => entity,
            Fetched::Absent => panic!("absent"),
        }
    }

    #[tokio::test]
    async fn names_tags_and_prefixes_are_fetched_and_unknown_ids_are_absent() {
        let prefix = Prefix::new(URL);
        prefix.hset("venue", "v1", &[("rating", b"4.5"), ("eta", b"25"), ("_tags", br#"["pizza","italian"]"#)]);
        prefix.hset("venue", "v2", &[("rating", b"-3")]);
        prefix.hset(
            "user",
            "u1",
            &[("age", b"31"), ("affinity.pizza", b"0.5"), ("affinity.sushi", b"1e-3"), ("other", b"1")],
        );
        let store = store(&prefix, Encoding::Decimal);
        let venue = FieldSet::new(vec!["rating".into(), "eta".into()], vec![], true);
        let venues = fetch(&store, "venue", &venue, &["v1", "v2", "nobody"]).await;
        let v1 = found(&venues[0]);
        assert_eq!(&*v1.values, [4.5, 25.0]);
        assert_eq!(v1.tags.as_deref(), Some(&[Box::from("pizza"), Box::from("italian")][..]));
        let v2 = found(&venues[1]);
        assert_eq!((v2.values[0], v2.values[1].is_nan(), v2.tags.is_none()), (-3.0, true, true));
        assert_eq!(venues[2], Fetched::Absent);

        let user = FieldSet::from_patterns(["age", "affinity.*"], false);
        let users = fetch(&store, "user", &user, &["u1", "nobody"]).await;
        let u1 = found(&users[0]);
        assert_eq!(&*u1.values, [31.0]);
        assert_eq!(&*u1.prefixed, [(Box::from("affinity.pizza"), 0.5), (Box::from("affinity.sushi"), 1e-3)]);
        assert_eq!(users[1], Fetched::Absent);
        // A prefix of everything still never matches a reserved field.
        let everything = fetch(&store, "venue", &FieldSet::from_patterns(["*"], false), &["v1"]).await;
        assert_eq!(found(&everything[0]).prefixed.iter().map(|(n, _)| &**n).collect::<Vec<_>>(), ["eta", "rating"]);
        // Nothing asked: whether it exists.
        let nothing = fetch(&store, "venue", &FieldSet::new(vec![], vec![], false), &["v1", "nobody"]).await;
        assert_eq!((matches!(nothing[0], Fetched::Found(_)), &nothing[1]), (true, &Fetched::Absent));
    }

    #[tokio::test]
    async fn bad_values_are_refused_one_by_one_and_counted() {
        let prefix = Prefix::new(URL);
        prefix.hset(
            "venue",
            "v1",
            &[
                ("good", b"1.5"),
                ("word", b"pizza"),
                ("huge", b"1e39"),
                ("nan", b"NaN"),
                ("long", &[b'1'; 100]),
                ("_tags", b"pizza"),
            ],
        );
        prefix.hset("user", "u1", &[("a.good", b"2"), ("a.bad", b"inf"), ("a.long", &[b'7'; 1000])]);
        let store = store(&prefix, Encoding::Decimal);
        let fields = FieldSet::new(["good", "word", "huge", "nan", "long"].map(String::from).to_vec(), vec![], true);
        let venues = fetch(&store, "venue", &fields, &["v1"]).await;
        let v1 = found(&venues[0]);
        assert_eq!(v1.values[0], 1.5);
        assert!(v1.values[1..].iter().all(|v| v.is_nan()), "{:?}", v1.values);
        assert_eq!(v1.tags, None);
        let users = fetch(&store, "user", &FieldSet::from_patterns(["a.*"], false), &["u1"]).await;
        assert_eq!(&*found(&users[0]).prefixed, [(Box::from("a.good"), 2.0)]);
        let refusals = &store.refusals;
        assert_eq!(refusals.count("venue", Refusal::NotANumber), 1);
        assert_eq!(refusals.count("venue", Refusal::OutOfRange), 1);
        assert_eq!(refusals.count("venue", Refusal::NotFinite), 1);
        assert_eq!(refusals.count("venue", Refusal::TooLarge), 1);
        assert_eq!(refusals.count("venue", Refusal::BadTags), 1);
        assert_eq!(refusals.count("user", Refusal::NotFinite), 1);
        assert_eq!(refusals.count("user", Refusal::TooLarge), 1);
    }

    #[tokio::test]
    async fn a_huge_hash_is_refused_on_the_server_and_its_names_still_read() {
        let prefix = Prefix::new(URL);
        let mut connection = prefix.connection();
        let key = format!("{}:user:big", prefix.prefix);
        let mut cmd = ::redis::cmd("HSET");
        cmd.arg(&key).arg("age").arg("40");
        for n in 0..MAX_HASH_FIELDS + 10 {
            cmd.arg(format!("affinity.{n}")).arg("1");
        }
        cmd.exec(&mut connection).unwrap();
        let store = store(&prefix, Encoding::Decimal);
        let users = fetch(&store, "user", &FieldSet::from_patterns(["age", "affinity.*"], false), &["big"]).await;
        let big = found(&users[0]);
        assert_eq!((&*big.values, big.prefixed.len()), (&[40.0][..], 0));
        assert_eq!(store.refusals.count("user", Refusal::TooLarge), 1);
    }

    #[tokio::test]
    async fn a_key_that_is_not_a_hash_is_refused_as_wrong_type() {
        let prefix = Prefix::new(URL);
        ::redis::cmd("SET")
            .arg(format!("{}:venue:string", prefix.prefix))
            .arg("x")
            .exec(&mut prefix.connection())
            .unwrap();
        ::redis::cmd("SET")
            .arg(format!("{}:user:string", prefix.prefix))
            .arg("x")
            .exec(&mut prefix.connection())
            .unwrap();
        prefix.hset("venue", "v1", &[("rating", b"4")]);
        let store = store(&prefix, Encoding::Decimal);
        let venues =
            fetch(&store, "venue", &FieldSet::new(vec!["rating".into()], vec![], false), &["string", "v1"]).await;
        assert_eq!((&venues[0], found(&venues[1]).values[0]), (&Fetched::Absent, 4.0));
        let users = fetch(&store, "user", &FieldSet::from_patterns(["a.*"], false), &["string"]).await;
        assert_eq!(users[0], Fetched::Absent);
        assert_eq!(store.refusals.count("venue", Refusal::WrongType), 1);
        assert_eq!(store.refusals.count("user", Refusal::WrongType), 1);
    }

    #[tokio::test]
    async fn f32le_stores_read_bits() {
        let prefix = Prefix::new(URL);
        prefix.hset("venue", "v1", &[("rating", &4.25f32.to_le_bytes()), ("text", b"4.5")]);
        let store = store(&prefix, Encoding::F32le);
        let venues =
            fetch(&store, "venue", &FieldSet::new(vec!["rating".into(), "text".into()], vec![], false), &["v1"]).await;
        let v1 = found(&venues[0]);
        assert_eq!((v1.values[0], v1.values[1].is_nan()), (4.25, true));
        assert_eq!(store.refusals.count("venue", Refusal::NotANumber), 1);
    }

    #[tokio::test]
    async fn a_lookup_through_features_makes_one_round_trip_and_then_hits() {
        let prefix = Prefix::new(URL);
        prefix.hset("user", "u1", &[("affinity.pizza", b"0.5")]);
        for n in 0..50 {
            prefix.hset("venue", &format!("v{n}"), &[("rating", format!("{n}").as_bytes())]);
        }
        let features = Features::new("main", &config(URL, &prefix.prefix), &prometheus::Registry::new()).unwrap();
        assert_eq!(features.kind(), "redis");
        let user = Arc::new(FieldSet::from_patterns(["affinity.*"], false));
        let venue = Arc::new(FieldSet::new(vec!["rating".into()], vec![], true));
        let ids: Vec<String> = (0..50).map(|n| format!("v{n}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let queries = [
            Query { entity: "user", fields: &user, ids: &["u1"] },
            Query { entity: "venue", fields: &venue, ids: &ids },
        ];
        let cold = features.lookup(&queries, Duration::from_secs(2)).await;
        assert_eq!((cold.round_trips, cold.misses, cold.error), (1, 51, None));
        assert_eq!(cold.found[0][0].as_ref().unwrap().prefixed.len(), 1);
        assert_eq!(cold.found[1][49].as_ref().unwrap().values[0], 49.0);
        let warm = features.lookup(&queries, Duration::from_secs(2)).await;
        assert_eq!((warm.round_trips, warm.hits), (0, 51));
    }

    /// A `redis-server` of the test's own, on `port`, without persistence; killed when dropped.
    struct Server(std::process::Child);

    impl Server {
        fn start(port: u16, dir: &Path) -> Server {
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            let server = Server(child);
            let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
            let started = Instant::now();
            while client.get_connection().and_then(|mut c| ::redis::cmd("PING").exec(&mut c)).is_err() {
                assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            server
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_stopping_degrades_lookups_by_their_deadline_and_its_return_is_picked_up() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("redis://127.0.0.1:{port}/0");
        let server = Server::start(port, dir.path());
        let prefix = Prefix::new(&url);
        prefix.hset("venue", "v1", &[("rating", b"1")]);
        let config = StoreConfig {
            timeout_ms: 200,
            cache: CacheConfig { ttl_secs: 0.1, ..CacheConfig::default() },
            ..config(&url, &prefix.prefix)
        };
        let features = Features::new("fault", &config, &prometheus::Registry::new()).unwrap();
        let fields = Arc::new(FieldSet::new(vec!["rating".into()], vec![], false));
        let ids = ["v1", "v2"];
        let query = [Query { entity: "venue", fields: &fields, ids: &ids }];
        let deadline = Duration::from_millis(50);
        let up = features.lookup(&[Query { ids: &ids[..1], ..query[0] }], deadline).await;
        assert_eq!((up.found[0][0].as_ref().map(|e| e.values[0]), up.error), (Some(1.0), None));

        drop(server);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut reasons = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let down = features.lookup(&query, deadline).await;
            assert!(started.elapsed() < deadline + Duration::from_millis(100), "{:?}", started.elapsed());
            // The expired entry answers; the id never seen is missing, and the answer says why.
            assert_eq!(down.found[0][0].as_ref().map(|e| e.values[0]), Some(1.0));
            assert!(down.found[0][1].is_none());
            assert_eq!((down.stale, down.misses), (1, 2));
            reasons.push(down.error.as_ref().map(LookupFailure::reason).expect("an error"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(reasons.iter().all(|r| ["unavailable", "timeout"].contains(r)), "{reasons:?}");
        assert!(reasons.contains(&"unavailable"), "fails fast while down: {reasons:?}");

        // Back on the same port (empty: no persistence), with new data.
        let _server = Server::start(port, dir.path());
        prefix.hset("venue", "v1", &[("rating", b"10")]);
        prefix.hset("venue", "v2", &[("rating", b"2")]);
        let started = Instant::now();
        loop {
            let back = features.lookup(&query, deadline).await;
            if back.error.is_none() {
                let values: Vec<_> = back.found[0].iter().map(|e| e.as_ref().map(|e| e.values[0])).collect();
                assert_eq!(values, [Some(10.0), Some(2.0)]);
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "not back within 5 s: {:?}", back.error);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("lookups resumed {:?} after Redis restarted", started.elapsed());
    }

    #[tokio::test]
    async fn a_store_that_was_never_reachable_fails_fast() {
        // Nothing listens on port 1.
        let config = StoreConfig { cache: CacheConfig::default(), ..StoreConfig::redis("redis://127.0.0.1:1/0") };
        let features = Features::new("down", &config, &prometheus::Registry::new()).unwrap();
        let fields = Arc::new(FieldSet::new(vec!["rating".into()], vec![], false));
        let query = [Query { entity: "venue", fields: &fields, ids: &["v1"] }];
        for _ in 0..3 {
            let started = Instant::now();
            let lookup = features.lookup(&query, Duration::from_millis(500)).await;
            assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
            assert!(matches!(lookup.error, Some(LookupFailure::Unavailable(_))), "{:?}", lookup.error);
        }
    }
}
