-- Mastodon-shaped schema for bench/backup.sh: the hot tables of a Mastodon instance, simplified
-- (accounts, statuses, favourites, follows), plus the generators of realistic text.
\set ON_ERROR_STOP on

-- A vocabulary in rough frequency order; bench_text picks word i with a probability that falls
-- off with i (random() * random()), so common words dominate as in real posts. Stored inline and
-- uncompressed: detoasting it on every call made text generation ten times slower.
CREATE TABLE bench_vocab (w text[] NOT NULL);
ALTER TABLE bench_vocab ALTER w SET STORAGE PLAIN;
INSERT INTO bench_vocab VALUES ('{
  "the","be","to","of","and","a","in","that","have","I","it","for","not","on","with","he","as",
  "you","do","at","this","but","his","by","from","they","we","say","her","she","or","an","will",
  "my","one","all","would","there","their","what","so","up","out","if","about","who","get",
  "which","go","me","when","make","can","like","time","no","just","him","know","take","people",
  "into","year","your","good","some","could","them","see","other","than","then","now","look",
  "only","come","its","over","think","also","back","after","use","two","how","our","work","first",
  "well","way","even","new","want","because","any","these","give","day","most","us","is","was",
  "are","were","been","has","had","did","said","made","went","got","very","really","much","still",
  "here","why","where","today","tomorrow","yesterday","morning","night","week","love","thanks",
  "thank","great","nice","cool","fun","happy","sad","bad","better","best","little","big","old",
  "long","right","left","post","toot","fediverse","mastodon","instance","server","admin","follow",
  "boost","reply","thread","timeline","federated","local","home","open","source","linux","rust",
  "python","code","bug","fix","release","update","coffee","tea","cat","cats","dog","photo","art",
  "music","book","books","game","games","play","reading","watching","listening","weather","rain",
  "sun","snow","city","train","bike","walk","friends","family","kids","school","job","meeting",
  "life","world","news","politics","climate","science","space","data","privacy","web","browser",
  "app","phone","computer","keyboard","window","door","food","dinner","lunch","breakfast","pizza",
  "bread","cake","garden","tree","flower","bird","sky","sea","beach","mountain","river","lake",
  "road","car","bus","station","hello","morning","everyone","anyone","someone","something",
  "nothing","everything","always","never","sometimes","maybe","probably","definitely","actually",
  "literally","honestly","seriously","wait","what","lol","yes","yeah","okay","sure","hmm","wow",
  "ugh","oops","#caturday","#photography","#foss","#linux","#rustlang","#python","#music","#art",
  "#books","#gaming","#climate","#science","#opensource","#mastodon","#introduction","#fediverse",
  ":blobcat:",":ablobcatheart:","🙂","😂","❤️","🎉","🤔","👍","🐘"}');

CREATE FUNCTION bench_text(nwords int) RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT string_agg(v.w[1 + floor(random() * random() * cardinality(v.w))::int], ' ')
  FROM bench_vocab v, generate_series(1, nwords)
$$;

-- A post: 3 to 63 words (most of them short), sometimes a mention, sometimes a link.
CREATE FUNCTION bench_status_text() RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT CASE WHEN random() < 0.3 THEN '@user' || floor(random() * 100000)::int || ' ' ELSE '' END
      || bench_text(3 + floor(random() ^ 2 * 61)::int)
      || CASE WHEN random() < 0.15
              THEN ' https://example.social/@user' || floor(random() * 100000)::int || '/'
                   || (100000000000000000 + floor(random() * 1e16))::bigint
              ELSE '' END
$$;

CREATE TABLE accounts (
  id              bigserial PRIMARY KEY,
  username        text NOT NULL,
  display_name    text NOT NULL,
  note            text NOT NULL,
  created_at      timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL,
  statuses_count  int NOT NULL DEFAULT 0,
  followers_count int NOT NULL DEFAULT 0,
  following_count int NOT NULL DEFAULT 0
);

CREATE TABLE statuses (
  id               bigserial PRIMARY KEY,
  account_id       bigint NOT NULL,
  in_reply_to_id   bigint,
  text             text NOT NULL,
  language         text,
  created_at       timestamptz NOT NULL,
  updated_at       timestamptz NOT NULL,
  edited_at        timestamptz,
  favourites_count int NOT NULL DEFAULT 0,
  reblogs_count    int NOT NULL DEFAULT 0,
  visibility       int NOT NULL DEFAULT 0,
  deleted_at       timestamptz
);

CREATE TABLE favourites (
  id         bigserial PRIMARY KEY,
  account_id bigint NOT NULL,
  status_id  bigint NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);

CREATE TABLE follows (
  id                bigserial PRIMARY KEY,
  account_id        bigint NOT NULL,
  target_account_id bigint NOT NULL,
  show_reblogs      boolean NOT NULL DEFAULT true,
  created_at        timestamptz NOT NULL,
  updated_at        timestamptz NOT NULL
);
