-- One day of activity on the instance loaded by load.sql, for bench/backup.sh.
-- psql variables: new_statuses, new_favourites, new_follows, new_accounts, counter_updates,
-- edits, deletes (row counts).
\set ON_ERROR_STOP on

-- Sign-ups.
INSERT INTO accounts (username, display_name, note, created_at, updated_at)
SELECT 'user' || (m.id + g), initcap(bench_text(2)), bench_text(5 + floor(random() * 30)::int), now(), now()
FROM (SELECT max(id) AS id FROM accounts) m, generate_series(1, :new_accounts) g;

-- New posts over the day, 30% of them replies to a post of the last few days.
WITH m AS (SELECT max(id) AS sid, (SELECT max(id) FROM accounts) AS aid FROM statuses)
INSERT INTO statuses (account_id, in_reply_to_id, text, language, created_at, updated_at,
                      visibility)
SELECT 1 + floor(random() ^ 2 * m.aid)::bigint,
       CASE WHEN random() < 0.3 THEN m.sid - floor(random() * 3 * :new_statuses)::bigint END,
       bench_status_text(),
       (ARRAY['en', 'en', 'en', 'en', 'de', 'fr', 'ja', 'es'])[1 + floor(random() * 8)::int],
       now() - interval '1 day' * (1 - g::float8 / :new_statuses),
       now() - interval '1 day' * (1 - g::float8 / :new_statuses),
       floor(random() ^ 3 * 4)::int
FROM m, generate_series(1, :new_statuses) g;

-- Favourites, mostly of the newest posts; one account cannot favourite a post twice.
WITH m AS (SELECT max(id) AS sid, (SELECT max(id) FROM accounts) AS aid FROM statuses)
INSERT INTO favourites (account_id, status_id, created_at, updated_at)
SELECT 1 + floor(random() * m.aid)::bigint,
       m.sid - floor(random() ^ 2 * 3 * :new_statuses)::bigint,
       now() - interval '1 day' * random(), now()
FROM m, generate_series(1, :new_favourites) g
ON CONFLICT (account_id, status_id) DO NOTHING;

-- Counters of the posts that were favourited and boosted today (a few thousand recent posts).
WITH m AS (SELECT max(id) AS sid FROM statuses),
     t AS (SELECT DISTINCT m.sid - floor(random() ^ 2 * 3 * :new_statuses)::bigint AS id
           FROM m, generate_series(1, :counter_updates))
UPDATE statuses s SET favourites_count = favourites_count + 1 + floor(random() * 5)::int,
                      reblogs_count = reblogs_count + floor(random() ^ 3 * 3)::int,
                      updated_at = now()
FROM t WHERE s.id = t.id;

-- Edits of recent posts.
WITH m AS (SELECT max(id) AS sid FROM statuses),
     t AS (SELECT DISTINCT m.sid - floor(random() * 3 * :new_statuses)::bigint AS id
           FROM m, generate_series(1, :edits))
UPDATE statuses s SET text = bench_status_text(), edited_at = now(), updated_at = now()
FROM t WHERE s.id = t.id;

-- Deletions: two thirds of recent posts (soft: deleted_at, as Mastodon marks them first), one
-- third anywhere in the history (rows removed with their favourites).
WITH m AS (SELECT max(id) AS sid FROM statuses),
     t AS (SELECT DISTINCT m.sid - floor(random() * 3 * :new_statuses)::bigint AS id
           FROM m, generate_series(1, :deletes * 2 / 3))
UPDATE statuses s SET deleted_at = now(), updated_at = now() FROM t WHERE s.id = t.id;
CREATE TEMP TABLE gone AS
  SELECT DISTINCT 1 + floor(random() * (SELECT max(id) FROM statuses))::bigint AS id
  FROM generate_series(1, :deletes / 3);
DELETE FROM favourites f USING gone WHERE f.status_id = gone.id;
DELETE FROM statuses s USING gone WHERE s.id = gone.id;

-- Follows and a few unfollows.
WITH m AS (SELECT max(id) AS aid FROM accounts)
INSERT INTO follows (account_id, target_account_id, created_at, updated_at)
SELECT 1 + floor(random() * m.aid)::bigint, 1 + floor(random() ^ 2 * m.aid)::bigint, now(), now()
FROM m, generate_series(1, :new_follows)
ON CONFLICT (account_id, target_account_id) DO NOTHING;
DELETE FROM follows WHERE id IN
  (SELECT 1 + floor(random() * (SELECT max(id) FROM follows))::bigint FROM generate_series(1, :new_follows / 6));

-- Accounts that posted today.
UPDATE accounts a SET statuses_count = statuses_count + c.n, updated_at = now()
FROM (SELECT account_id, count(*) AS n FROM statuses WHERE created_at > now() - interval '1 day'
      GROUP BY account_id) c
WHERE c.account_id = a.id;

VACUUM (ANALYZE);
