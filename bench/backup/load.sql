-- Initial load for bench/backup.sh: a year of history of a small Mastodon instance.
-- psql variables: accounts, statuses, favourites, follows (row counts).
-- Run with wal_level = minimal and archiving off (the backups start after it); indexes are built
-- after the data, as a restore of a dump would.
\set ON_ERROR_STOP on

INSERT INTO accounts (username, display_name, note, created_at, updated_at)
SELECT 'user' || g, initcap(bench_text(2)), bench_text(5 + floor(random() * 30)::int),
       now() - interval '3 years' * random(), now() - interval '30 days' * random()
FROM generate_series(1, :accounts) g;

-- Statuses in time order (ids grow with created_at, as Mastodon's snowflake ids do); a few
-- accounts post most of them (random() ^ 2), 30% are replies to a recent status.
INSERT INTO statuses (account_id, in_reply_to_id, text, language, created_at, updated_at,
                      favourites_count, reblogs_count, visibility)
SELECT 1 + floor(random() ^ 2 * :accounts)::bigint,
       CASE WHEN g > 1000 AND random() < 0.3 THEN g - 1 - floor(random() * 1000)::bigint END,
       bench_status_text(),
       (ARRAY['en', 'en', 'en', 'en', 'de', 'fr', 'ja', 'es'])[1 + floor(random() * 8)::int],
       ts, ts,
       floor(random() ^ 4 * 40)::int, floor(random() ^ 6 * 15)::int, floor(random() ^ 3 * 4)::int
FROM (SELECT g, now() - interval '365 days' * (1 - g::float8 / :statuses) AS ts
      FROM generate_series(1, :statuses) g) s;

-- Favourites in time order, each on a status posted shortly before. Favourite g belongs to
-- account 1 + g % accounts and points at most W statuses before status ceil(g * S / F), with
-- W = floor(accounts * S / F): so one account's favourites point at strictly increasing statuses
-- and (account_id, status_id) is unique without checking.
INSERT INTO favourites (account_id, status_id, created_at, updated_at)
SELECT a, sid, ts, ts
FROM (SELECT 1 + g % :accounts AS a,
             b - floor(random() * least(b, greatest(1, floor(:accounts::float8 * :statuses / :favourites))))::bigint AS sid,
             now() - interval '365 days' * (1 - b::float8 / :statuses) + interval '1 hour' * random() AS ts
      FROM (SELECT g, ceil(g::float8 * :statuses / :favourites)::bigint AS b
            FROM generate_series(1, :favourites) g) s0) s;

-- Follows: account 1 + g % accounts follows, as its k-th follow (k = g / accounts), one account in
-- the k-th slice of the other accounts: unique without checking.
INSERT INTO follows (account_id, target_account_id, created_at, updated_at)
SELECT a, 1 + (a + k * stride + floor(random() * stride)::bigint) % :accounts, ts, ts
FROM (SELECT 1 + g % :accounts AS a, g / :accounts AS k,
             greatest(1, :accounts / (:follows / :accounts + 1)) AS stride,
             now() - interval '3 years' * (1 - g::float8 / :follows) AS ts
      FROM generate_series(1, :follows) g) s;

UPDATE accounts a SET statuses_count = c.n FROM
  (SELECT account_id, count(*) AS n FROM statuses GROUP BY account_id) c WHERE c.account_id = a.id;

CREATE UNIQUE INDEX index_accounts_on_username ON accounts (lower(username));
CREATE INDEX index_statuses_on_account_id_id ON statuses (account_id, id DESC);
CREATE INDEX index_statuses_on_created_at ON statuses (created_at);
CREATE INDEX index_statuses_on_in_reply_to_id ON statuses (in_reply_to_id) WHERE in_reply_to_id IS NOT NULL;
CREATE UNIQUE INDEX index_favourites_on_account_id_and_status_id ON favourites (account_id, status_id);
CREATE INDEX index_favourites_on_status_id ON favourites (status_id);
CREATE UNIQUE INDEX index_follows_on_account_id_and_target_account_id ON follows (account_id, target_account_id);
CREATE INDEX index_follows_on_target_account_id ON follows (target_account_id);
VACUUM (ANALYZE);
