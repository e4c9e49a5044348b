//! The `volunteers`, `comparisons`, `presentations`, `votes` and `ratings` tables.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;
use crate::feedback::{Aspect, Verdict};

/// Someone who votes (and, if `expert`, rates).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Volunteer {
    pub id: Uuid,
    pub name: String,
    pub expert: bool,
}

/// A pair of outputs of the same input, candidate against baseline.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Comparison {
    pub id: Uuid,
    pub task: String,
    pub prompt: String,
    pub candidate_job: Uuid,
    pub candidate_output: i32,
    pub candidate_model: String,
    pub baseline_job: Uuid,
    pub baseline_output: i32,
    pub baseline_model: String,
    pub votes_wanted: i32,
    pub created_at: DateTime<Utc>,
}

macro_rules! comparison_columns {
    () => {
        "c.id, c.task, c.prompt, c.candidate_job, c.candidate_output, c.candidate_model, \
         c.baseline_job, c.baseline_output, c.baseline_model, c.votes_wanted, c.created_at"
    };
}

/// Records a comparison; `None` when one of its jobs has expired. Both job
/// rows are share-locked by the insert, so the retention sweep (which skips
/// locked rows and exempts compared jobs) cannot expire them underneath it.
pub async fn insert_comparison(db: &PgPool, c: &Comparison) -> Result<Option<Comparison>> {
    Ok(sqlx::query_as(concat!(
        "INSERT INTO comparisons AS c (id, task, prompt, candidate_job, candidate_output, candidate_model, \
         baseline_job, baseline_output, baseline_model, votes_wanted) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
         FROM (SELECT id FROM jobs WHERE id IN ($4, $7) AND expired_at IS NULL FOR SHARE) AS live \
         HAVING count(*) = 2 RETURNING ",
        comparison_columns!()
    ))
    .bind(c.id)
    .bind(&c.task)
    .bind(&c.prompt)
    .bind(c.candidate_job)
    .bind(c.candidate_output)
    .bind(&c.candidate_model)
    .bind(c.baseline_job)
    .bind(c.baseline_output)
    .bind(&c.baseline_model)
    .bind(c.votes_wanted)
    .fetch_optional(db)
    .await?)
}

/// Whether a volunteer may see `job`'s images: it is one side of a
/// comparison, or (for an `expert`, who rates single outputs) an admin
/// submitted it for rating. Clients' own jobs stay theirs.
pub async fn open_to_volunteer(db: &PgPool, job: Uuid, expert: bool) -> Result<bool> {
    let (found,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM comparisons WHERE candidate_job = $1 OR baseline_job = $1) \
             OR ($2 AND EXISTS (SELECT 1 FROM jobs j JOIN api_keys k ON k.id = j.owner_key \
                                WHERE j.id = $1 AND k.role = 'admin'))",
    )
    .bind(job)
    .bind(expert)
    .fetch_one(db)
    .await?;
    Ok(found)
}

pub async fn get_comparison(db: &PgPool, id: Uuid) -> Result<Option<Comparison>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        comparison_columns!(),
        " FROM comparisons c WHERE c.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// A comparison this volunteer has not voted on (overall), whose two jobs
/// have succeeded and which still wants votes: the least-voted first, ties
/// at random.
pub async fn next_for(db: &PgPool, volunteer: Uuid) -> Result<Option<Comparison>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        comparison_columns!(),
        " FROM comparisons c \
         JOIN jobs cj ON cj.id = c.candidate_job AND cj.status = 'succeeded' \
         JOIN jobs bj ON bj.id = c.baseline_job AND bj.status = 'succeeded' \
         LEFT JOIN LATERAL (SELECT count(*) AS n FROM votes v \
           WHERE v.comparison_id = c.id AND v.aspect = 'overall') done ON true \
         WHERE done.n < c.votes_wanted \
           AND NOT EXISTS (SELECT 1 FROM votes v WHERE v.comparison_id = c.id \
             AND v.volunteer_id = $1 AND v.aspect = 'overall') \
         ORDER BY done.n, random() LIMIT 1"
    ))
    .bind(volunteer)
    .fetch_optional(db)
    .await?)
}

/// Records that `comparison` was shown with the candidate on the left or right.
pub async fn present(
    db: &PgPool,
    comparison: Uuid,
    volunteer: Uuid,
    candidate_left: bool,
) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO presentations (id, comparison_id, volunteer_id, candidate_left) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(comparison)
    .bind(volunteer)
    .bind(candidate_left)
    .execute(db)
    .await?;
    Ok(id)
}

/// A presentation of `comparison` to `volunteer`: whether the candidate was on the left.
pub async fn presentation(
    db: &PgPool,
    id: Uuid,
    comparison: Uuid,
    volunteer: Uuid,
) -> Result<Option<bool>> {
    let row: Option<(bool,)> = sqlx::query_as(
        "SELECT candidate_left FROM presentations WHERE id = $1 AND comparison_id = $2 AND volunteer_id = $3",
    )
    .bind(id)
    .bind(comparison)
    .bind(volunteer)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| r.0))
}

/// A vote to record; `presentation` says how the pair was shown.
pub struct NewVote {
    pub comparison: Uuid,
    pub volunteer: Uuid,
    pub aspect: Aspect,
    pub verdict: Verdict,
    pub presentation: Option<(Uuid, bool)>,
}

/// Records a vote, replacing this volunteer's earlier vote on the same
/// comparison and aspect. True when it replaced one.
pub async fn upsert_vote(db: &PgPool, v: &NewVote) -> Result<bool> {
    let (replaced,): (bool,) = sqlx::query_as(
        "INSERT INTO votes (comparison_id, volunteer_id, aspect, verdict, presentation_id, candidate_left) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (comparison_id, volunteer_id, aspect) DO UPDATE SET verdict = $4, \
           presentation_id = $5, candidate_left = $6, updated_at = now() \
         RETURNING (xmax <> 0)",
    )
    .bind(v.comparison)
    .bind(v.volunteer)
    .bind(v.aspect.as_str())
    .bind(v.verdict.as_str())
    .bind(v.presentation.map(|p| p.0))
    .bind(v.presentation.map(|p| p.1))
    .fetch_one(db)
    .await?;
    Ok(replaced)
}

/// Expert scores of one output.
pub struct NewRating {
    pub job: Uuid,
    pub output: i32,
    pub volunteer: Uuid,
    pub coherence: i16,
    pub structure: i16,
    pub aesthetics: Option<i16>,
}

/// Records a rating, replacing this expert's earlier one: `Some(true)` when
/// it replaced one, `None` when the job has expired. The job row is
/// share-locked by the insert, so the retention sweep (which skips locked
/// rows and exempts rated jobs) cannot expire it underneath the rating.
pub async fn upsert_rating(db: &PgPool, r: &NewRating) -> Result<Option<bool>> {
    let row: Option<(bool,)> = sqlx::query_as(
        "INSERT INTO ratings (job_id, output_index, volunteer_id, coherence, structure, aesthetics) \
         SELECT id, $2, $3, $4, $5, $6 FROM jobs WHERE id = $1 AND expired_at IS NULL FOR SHARE \
         ON CONFLICT (job_id, output_index, volunteer_id) DO UPDATE SET coherence = $4, \
           structure = $5, aesthetics = $6, updated_at = now() \
         RETURNING (xmax <> 0)",
    )
    .bind(r.job)
    .bind(r.output)
    .bind(r.volunteer)
    .bind(r.coherence)
    .bind(r.structure)
    .bind(r.aesthetics)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(replaced,)| replaced))
}

/// Vote counts per candidate, baseline and task for one aspect.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GsbCounts {
    pub candidate_model: String,
    pub baseline_model: String,
    pub task: String,
    pub good: i64,
    pub same: i64,
    pub bad: i64,
    /// Votes where the preferred output was shown on the left, and votes
    /// with a recorded side and a preference (for position bias).
    pub left_preferred: i64,
    pub sided: i64,
}

pub async fn gsb_counts(
    db: &PgPool,
    candidate: Option<&str>,
    baseline: Option<&str>,
    task: Option<&str>,
    aspect: Aspect,
) -> Result<Vec<GsbCounts>> {
    Ok(sqlx::query_as(
        "SELECT c.candidate_model, c.baseline_model, c.task, \
           count(*) FILTER (WHERE v.verdict = 'good') AS good, \
           count(*) FILTER (WHERE v.verdict = 'same') AS same, \
           count(*) FILTER (WHERE v.verdict = 'bad') AS bad, \
           count(*) FILTER (WHERE (v.verdict = 'good' AND v.candidate_left) \
             OR (v.verdict = 'bad' AND NOT v.candidate_left)) AS left_preferred, \
           count(*) FILTER (WHERE v.verdict <> 'same' AND v.candidate_left IS NOT NULL) AS sided \
         FROM votes v JOIN comparisons c ON c.id = v.comparison_id \
         WHERE v.aspect = $1 AND ($2::text IS NULL OR c.candidate_model = $2) \
           AND ($3::text IS NULL OR c.baseline_model = $3) AND ($4::text IS NULL OR c.task = $4) \
         GROUP BY c.candidate_model, c.baseline_model, c.task \
         ORDER BY c.candidate_model, c.baseline_model, c.task",
    )
    .bind(aspect.as_str())
    .bind(candidate)
    .bind(baseline)
    .bind(task)
    .fetch_all(db)
    .await?)
}

/// Mean expert scores per model and task.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RatingMeans {
    pub model: String,
    pub task: String,
    pub ratings: i64,
    pub coherence: f64,
    pub structure: f64,
    pub aesthetics: Option<f64>,
}

pub async fn rating_means(db: &PgPool) -> Result<Vec<RatingMeans>> {
    Ok(sqlx::query_as(
        "SELECT j.model, j.task, count(*) AS ratings, avg(r.coherence)::float8 AS coherence, \
           avg(r.structure)::float8 AS structure, avg(r.aesthetics)::float8 AS aesthetics \
         FROM ratings r JOIN jobs j ON j.id = r.job_id \
         GROUP BY j.model, j.task ORDER BY j.model, j.task",
    )
    .fetch_all(db)
    .await?)
}

/// One comparison with its votes and storage keys, for training.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PreferenceRow {
    pub comparison_id: Uuid,
    pub task: String,
    pub prompt: String,
    pub input_key: String,
    pub mask_key: Option<String>,
    pub candidate_model: String,
    pub candidate_key: String,
    pub baseline_model: String,
    pub baseline_key: String,
    pub good: i64,
    pub same: i64,
    pub bad: i64,
}

/// Every comparison with at least one vote on `aspect`, oldest first.
pub fn preferences(
    db: &PgPool,
    aspect: Aspect,
) -> impl futures_util::Stream<Item = Result<PreferenceRow, sqlx::Error>> + '_ {
    sqlx::query_as(
        "SELECT c.id AS comparison_id, c.task, c.prompt, cj.image_key AS input_key, cj.mask_key, \
           c.candidate_model, co.storage_key AS candidate_key, c.baseline_model, \
           bo.storage_key AS baseline_key, \
           count(*) FILTER (WHERE v.verdict = 'good') AS good, \
           count(*) FILTER (WHERE v.verdict = 'same') AS same, \
           count(*) FILTER (WHERE v.verdict = 'bad') AS bad \
         FROM comparisons c \
         JOIN votes v ON v.comparison_id = c.id AND v.aspect = $1 \
         JOIN jobs cj ON cj.id = c.candidate_job \
         JOIN job_outputs co ON co.job_id = c.candidate_job AND co.index = c.candidate_output \
         JOIN job_outputs bo ON bo.job_id = c.baseline_job AND bo.index = c.baseline_output \
         GROUP BY c.id, cj.image_key, cj.mask_key, co.storage_key, bo.storage_key \
         ORDER BY c.id",
    )
    .bind(aspect.as_str())
    .fetch(db)
}

/// Two outputs of one input and prompt whose mean expert aesthetics differ:
/// a preference pair for the aesthetic reward.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RatingPair {
    pub prompt: String,
    pub preferred_key: String,
    pub rejected_key: String,
    pub preferred_score: f64,
    pub rejected_score: f64,
}

/// Every [`RatingPair`]: outputs are scored by the mean of their experts'
/// `aesthetics` ratings; two outputs of jobs with the same input image and
/// prompt make a pair when their means differ (equal means are no pair).
pub async fn rating_pairs(db: &PgPool) -> Result<Vec<RatingPair>> {
    Ok(sqlx::query_as(
        "WITH scored AS ( \
           SELECT j.image_key, coalesce(j.params->>'prompt', '') AS prompt, o.storage_key AS key, \
                  avg(r.aesthetics)::float8 AS score \
           FROM ratings r \
           JOIN jobs j ON j.id = r.job_id \
           JOIN job_outputs o ON o.job_id = r.job_id AND o.index = r.output_index \
           WHERE r.aesthetics IS NOT NULL \
           GROUP BY j.image_key, coalesce(j.params->>'prompt', ''), o.storage_key) \
         SELECT a.prompt, a.key AS preferred_key, b.key AS rejected_key, \
                a.score AS preferred_score, b.score AS rejected_score \
         FROM scored a JOIN scored b \
           ON a.image_key = b.image_key AND a.prompt = b.prompt AND a.score > b.score \
         ORDER BY a.key, b.key",
    )
    .fetch_all(db)
    .await?)
}
