-- MovR dbinit.sql for CockroachDB, rendered by `movr db render --target cockroach`.
-- Spec: defaults; preset aws-eu-us; primary region eu-central-1;
--   survival region; super regions none; placement default.
-- Target: CockroachDB v26.2. Cluster region names: aws-{region} (each node's --locality region=...).
-- Apply with `movr db init --url cockroachdb://...` or `cockroach sql --url ... -f dbinit.sql`
-- (one session: the SET statements below hold for the statements after them).

-- The database and its regions; every table of a multi-region database is homed in them.
-- https://www.cockroachlabs.com/docs/stable/create-database
CREATE DATABASE movr PRIMARY REGION "aws-eu-central-1" REGIONS "aws-eu-west-3", "aws-us-east-2";

-- Survive the loss of a region: 5 replicas, a quorum of 3 spread over regions; writes pay a round trip to the
-- nearest other region.
-- https://www.cockroachlabs.com/docs/stable/multiregion-survival-goals
ALTER DATABASE movr SURVIVE REGION FAILURE;

-- Create the tables in the new database (USE is CockroachDB's alias for this).
-- https://www.cockroachlabs.com/docs/stable/set-vars
SET database = movr;

-- promo_codes: GLOBAL - fresh, local reads in every region; writes wait until every region can serve them.
-- https://www.cockroachlabs.com/docs/stable/table-localities
CREATE TABLE promo_codes (
    code VARCHAR(32) NOT NULL,
    description VARCHAR(256) NOT NULL,
    discount_percent INTEGER NOT NULL,
    expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (code),
    CONSTRAINT promo_codes_discount_check CHECK (discount_percent BETWEEN 1 AND 100)
) LOCALITY GLOBAL;

-- users: REGIONAL BY ROW, each row homed in its city's region (a stored computed column, as in the
-- data-domiciling article): a lookup that names the city goes straight to that region. CockroachDB prepends
-- region to the primary key (city, id) and to every index.
-- https://www.cockroachlabs.com/docs/stable/alter-table#set-the-table-locality-to-regional-by-row
CREATE TABLE users (
    city VARCHAR(64) NOT NULL,
    id UUID NOT NULL,
    username VARCHAR(64) NOT NULL,
    password_hash VARCHAR(256) NOT NULL,
    first_name VARCHAR(64) NOT NULL,
    last_name VARCHAR(64) NOT NULL,
    email VARCHAR(254) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    session_epoch INTEGER DEFAULT 0 NOT NULL,
    ended_sessions BIGINT[] DEFAULT '{}' NOT NULL,
    failed_logins INTEGER DEFAULT 0 NOT NULL,
    failed_since TIMESTAMP WITH TIME ZONE,
    region crdb_internal_region AS (
        CASE
            WHEN city IN ('stockholm', 'copenhagen', 'helsinki', 'oslo', 'riga', 'tallinn') THEN 'aws-eu-central-1'
            WHEN city IN ('dublin', 'belfast', 'london', 'liverpool', 'manchester', 'glasgow', 'birmingham', 'leeds',
                          'madrid', 'barcelona', 'sintra', 'rome', 'milan', 'lyon', 'lisbon', 'toulouse', 'paris',
                          'cologne', 'seville', 'marseille', 'naples', 'turin', 'valencia', 'palermo') THEN 'aws-eu-west-3'
            WHEN city IN ('new york', 'boston', 'washington dc', 'miami', 'charlotte', 'atlanta', 'chicago', 'st louis',
                          'indianapolis', 'nashville', 'dallas', 'houston', 'san francisco', 'los angeles', 'san diego',
                          'portland', 'las vegas', 'salt lake city') THEN 'aws-us-east-2'
            ELSE 'aws-eu-central-1'
        END
    ) STORED NOT NULL,
    PRIMARY KEY (city, id),
    CONSTRAINT users_username_lower_check CHECK (username = lower(username))
) LOCALITY REGIONAL BY ROW AS region;

-- Index users_username_key: CockroachDB partitions it by the row's region too; its uniqueness still holds across
-- every region (checked in every region at insert).
-- https://www.cockroachlabs.com/docs/stable/table-localities#indexes-on-regional-by-row-tables
CREATE UNIQUE INDEX users_username_key ON users (username);

-- idempotency_keys: REGIONAL BY ROW, each row homed in its city's region (a stored computed column, as in the
-- data-domiciling article): a lookup that names the city goes straight to that region. CockroachDB prepends
-- region to the primary key (city, scope, key) and to every index.
-- https://www.cockroachlabs.com/docs/stable/alter-table#set-the-table-locality-to-regional-by-row
CREATE TABLE idempotency_keys (
    city VARCHAR(64) NOT NULL,
    scope VARCHAR(36) NOT NULL,
    key VARCHAR(255) NOT NULL,
    user_id UUID NOT NULL,
    request VARCHAR(96) NOT NULL,
    answer JSONB NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    region crdb_internal_region AS (
        CASE
            WHEN city IN ('stockholm', 'copenhagen', 'helsinki', 'oslo', 'riga', 'tallinn') THEN 'aws-eu-central-1'
            WHEN city IN ('dublin', 'belfast', 'london', 'liverpool', 'manchester', 'glasgow', 'birmingham', 'leeds',
                          'madrid', 'barcelona', 'sintra', 'rome', 'milan', 'lyon', 'lisbon', 'toulouse', 'paris',
                          'cologne', 'seville', 'marseille', 'naples', 'turin', 'valencia', 'palermo') THEN 'aws-eu-west-3'
            WHEN city IN ('new york', 'boston', 'washington dc', 'miami', 'charlotte', 'atlanta', 'chicago', 'st louis',
                          'indianapolis', 'nashville', 'dallas', 'houston', 'san francisco', 'los angeles', 'san diego',
                          'portland', 'las vegas', 'salt lake city') THEN 'aws-us-east-2'
            ELSE 'aws-eu-central-1'
        END
    ) STORED NOT NULL,
    PRIMARY KEY (city, scope, key),
    FOREIGN KEY(city, user_id) REFERENCES users (city, id) ON DELETE CASCADE
) LOCALITY REGIONAL BY ROW AS region;

-- Index idempotency_keys_expiry_idx: CockroachDB partitions it by the row's region too.
-- https://www.cockroachlabs.com/docs/stable/table-localities#indexes-on-regional-by-row-tables
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (city, created_at);

-- Index idempotency_keys_user_idx: CockroachDB partitions it by the row's region too.
-- https://www.cockroachlabs.com/docs/stable/table-localities#indexes-on-regional-by-row-tables
CREATE INDEX idempotency_keys_user_idx ON idempotency_keys (city, user_id);

-- rides: REGIONAL BY ROW, each row homed in its city's region (a stored computed column, as in the
-- data-domiciling article): a lookup that names the city goes straight to that region. CockroachDB prepends
-- region to the primary key (city, id) and to every index.
-- https://www.cockroachlabs.com/docs/stable/alter-table#set-the-table-locality-to-regional-by-row
CREATE TABLE rides (
    city VARCHAR(64) NOT NULL,
    id UUID NOT NULL,
    rider_id UUID NOT NULL,
    vehicle_id UUID NOT NULL,
    start_location VARCHAR(128) NOT NULL,
    end_location VARCHAR(128),
    start_time TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    end_time TIMESTAMP WITH TIME ZONE,
    promo_code VARCHAR(32),
    region crdb_internal_region AS (
        CASE
            WHEN city IN ('stockholm', 'copenhagen', 'helsinki', 'oslo', 'riga', 'tallinn') THEN 'aws-eu-central-1'
            WHEN city IN ('dublin', 'belfast', 'london', 'liverpool', 'manchester', 'glasgow', 'birmingham', 'leeds',
                          'madrid', 'barcelona', 'sintra', 'rome', 'milan', 'lyon', 'lisbon', 'toulouse', 'paris',
                          'cologne', 'seville', 'marseille', 'naples', 'turin', 'valencia', 'palermo') THEN 'aws-eu-west-3'
            WHEN city IN ('new york', 'boston', 'washington dc', 'miami', 'charlotte', 'atlanta', 'chicago', 'st louis',
                          'indianapolis', 'nashville', 'dallas', 'houston', 'san francisco', 'los angeles', 'san diego',
                          'portland', 'las vegas', 'salt lake city') THEN 'aws-us-east-2'
            ELSE 'aws-eu-central-1'
        END
    ) STORED NOT NULL,
    PRIMARY KEY (city, id),
    FOREIGN KEY(city, rider_id) REFERENCES users (city, id) ON DELETE CASCADE
) LOCALITY REGIONAL BY ROW AS region;

-- Index rides_one_open_per_rider: CockroachDB partitions it by the row's region too; its uniqueness still holds
-- across every region (checked in the home region alone: the region is computed from city, which the index
-- names).
-- https://www.cockroachlabs.com/docs/stable/table-localities#indexes-on-regional-by-row-tables
CREATE UNIQUE INDEX rides_one_open_per_rider ON rides (city, rider_id) WHERE end_time IS NULL;

-- Index rides_one_open_per_vehicle: CockroachDB partitions it by the row's region too; its uniqueness still
-- holds across every region (checked in the home region alone: the region is computed from city, which the index
-- names).
-- https://www.cockroachlabs.com/docs/stable/table-localities#indexes-on-regional-by-row-tables
CREATE UNIQUE INDEX rides_one_open_per_vehicle ON rides (city, vehicle_id) WHERE end_time IS NULL;

-- Index rides_rider_idx: CockroachDB partitions it by the row's region too.
-- https://www.cockroachlabs.com/docs/stable/table-localities#indexes-on-regional-by-row-tables
CREATE INDEX rides_rider_idx ON rides (city, rider_id, start_time);

-- vehicles: REGIONAL BY ROW, each row homed in its city's region (a stored computed column, as in the
-- data-domiciling article): a lookup that names the city goes straight to that region. CockroachDB prepends
-- region to the primary key (city, id) and to every index.
-- https://www.cockroachlabs.com/docs/stable/alter-table#set-the-table-locality-to-regional-by-row
CREATE TABLE vehicles (
    city VARCHAR(64) NOT NULL,
    id UUID NOT NULL,
    type VARCHAR(32) NOT NULL,
    owner_id UUID NOT NULL,
    date_added TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    status VARCHAR(16) NOT NULL,
    last_location VARCHAR(128) NOT NULL,
    color VARCHAR(32) NOT NULL,
    brand VARCHAR(64) NOT NULL,
    region crdb_internal_region AS (
        CASE
            WHEN city IN ('stockholm', 'copenhagen', 'helsinki', 'oslo', 'riga', 'tallinn') THEN 'aws-eu-central-1'
            WHEN city IN ('dublin', 'belfast', 'london', 'liverpool', 'manchester', 'glasgow', 'birmingham', 'leeds',
                          'madrid', 'barcelona', 'sintra', 'rome', 'milan', 'lyon', 'lisbon', 'toulouse', 'paris',
                          'cologne', 'seville', 'marseille', 'naples', 'turin', 'valencia', 'palermo') THEN 'aws-eu-west-3'
            WHEN city IN ('new york', 'boston', 'washington dc', 'miami', 'charlotte', 'atlanta', 'chicago', 'st louis',
                          'indianapolis', 'nashville', 'dallas', 'houston', 'san francisco', 'los angeles', 'san diego',
                          'portland', 'las vegas', 'salt lake city') THEN 'aws-us-east-2'
            ELSE 'aws-eu-central-1'
        END
    ) STORED NOT NULL,
    PRIMARY KEY (city, id),
    FOREIGN KEY(city, owner_id) REFERENCES users (city, id) ON DELETE CASCADE,
    CONSTRAINT vehicles_status_check CHECK (status IN ('available', 'in_use'))
) LOCALITY REGIONAL BY ROW AS region;

-- Index vehicles_city_status_idx: CockroachDB partitions it by the row's region too.
-- https://www.cockroachlabs.com/docs/stable/table-localities#indexes-on-regional-by-row-tables
CREATE INDEX vehicles_city_status_idx ON vehicles (city, status);

-- Index vehicles_owner_idx: CockroachDB partitions it by the row's region too.
-- https://www.cockroachlabs.com/docs/stable/table-localities#indexes-on-regional-by-row-tables
CREATE INDEX vehicles_owner_idx ON vehicles (city, owner_id);
