-- segstream feature query, one row per user who has at least one order.
--
-- Runs unchanged on DuckDB (over Parquet or CSV files exposed as views) and on PostgreSQL
-- (through SQLAlchemy); segstream/training/features.py documents the semantics and holds the
-- Python twin of the tie rule that the stream uses. In short
--   total_orders           = COUNT(DISTINCT order_id) in orders, any status;
--   most_frequent_brand    = the brand with the most order items among the user's orders,
--   most_frequent_category   ties broken by the smallest name in byte (code point) order;
--   missing                = NULL or the empty string; missing brands and categories are
--                            not counted, and rows with any missing feature are dropped.
-- user_features holds every user, with NULL where a feature is missing (total_orders is NULL
-- for a user without orders); segmented keeps the users with every feature, the one rule of
-- who is segmented. exclusion_sql() (features.py) reuses everything above the final SELECT
-- to count the users left out and why, so the two queries cannot disagree.
-- age is read as stored (no CAST, which would round 30.5 to 31); the input table rules
-- (segstream/training/inputs.py) then refuse a fraction, as they do everywhere.
-- COLLATE "C" makes PostgreSQL compare bytes; it is also DuckDB's default order.
-- No colons anywhere in this file, so that SQLAlchemy's text() sees no bind parameters.

WITH user_orders AS (
    SELECT DISTINCT order_id, user_id
    FROM orders
),

order_counts AS (
    SELECT user_id, COUNT(DISTINCT order_id) AS total_orders
    FROM user_orders
    GROUP BY user_id
),

items AS (
    SELECT
        uo.user_id,
        NULLIF(p.brand, '') AS brand,
        NULLIF(p.category, '') AS category
    FROM order_items AS oi
    JOIN user_orders AS uo ON uo.order_id = oi.order_id
    JOIN products AS p ON p.id = oi.product_id
),

brand_ranks AS (
    SELECT
        user_id,
        brand,
        ROW_NUMBER() OVER (
            PARTITION BY user_id
            ORDER BY COUNT(*) DESC, brand COLLATE "C" ASC
        ) AS position
    FROM items
    WHERE brand IS NOT NULL
    GROUP BY user_id, brand
),

category_ranks AS (
    SELECT
        user_id,
        category,
        ROW_NUMBER() OVER (
            PARTITION BY user_id
            ORDER BY COUNT(*) DESC, category COLLATE "C" ASC
        ) AS position
    FROM items
    WHERE category IS NOT NULL
    GROUP BY user_id, category
),

user_features AS (
    SELECT
        u.id AS user_id,
        u.age AS age,
        NULLIF(u.gender, '') AS gender,
        NULLIF(u.country, '') AS country,
        NULLIF(u.traffic_source, '') AS traffic_source,
        CAST(oc.total_orders AS BIGINT) AS total_orders,
        br.brand AS most_frequent_brand,
        cr.category AS most_frequent_category
    FROM users AS u
    LEFT JOIN order_counts AS oc ON oc.user_id = u.id
    LEFT JOIN brand_ranks AS br ON br.user_id = u.id AND br.position = 1
    LEFT JOIN category_ranks AS cr ON cr.user_id = u.id AND cr.position = 1
),

segmented AS (
    SELECT *
    FROM user_features
    WHERE age IS NOT NULL
        AND gender IS NOT NULL
        AND country IS NOT NULL
        AND traffic_source IS NOT NULL
        AND total_orders IS NOT NULL
        AND most_frequent_brand IS NOT NULL
        AND most_frequent_category IS NOT NULL
)

-- final SELECT
SELECT
    user_id,
    age,
    gender,
    country,
    traffic_source,
    total_orders,
    most_frequent_brand,
    most_frequent_category
FROM segmented
ORDER BY user_id
