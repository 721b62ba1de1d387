//! The database schema, written by hand to match `migrations/*/` (both
//! backends have the same tables and columns).
//!
//! Ids are `BigInt`; timestamps are `Timestamp` holding UTC; states and kinds
//! are `Text`.

diesel::table! {
    pipelines (id) {
        id -> BigInt,
        name -> Text,
        current_revision -> Integer,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    definition_revisions (id) {
        id -> BigInt,
        pipeline_id -> BigInt,
        revision -> Integer,
        yaml -> Text,
        created_by -> Text,
        comment -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    stages (id) {
        id -> BigInt,
        pipeline_id -> BigInt,
        name -> Text,
        position -> Integer,
        trigger_kind -> Text,
        trigger_spec -> Text,
        next_fire_at -> Nullable<Timestamp>,
        last_fired_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        last_fire_outcome -> Nullable<Text>,
        last_fire_detail -> Nullable<Text>,
    }
}

diesel::table! {
    builds (id) {
        id -> BigInt,
        pipeline_id -> BigInt,
        number -> BigInt,
        state -> Text,
        branch -> Nullable<Text>,
        commit_sha -> Nullable<Text>,
        message -> Nullable<Text>,
        author -> Nullable<Text>,
        requested_by -> Text,
        trigger -> Text,
        error -> Nullable<Text>,
        runner -> Nullable<Text>,
        heartbeat_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    releases (id) {
        id -> BigInt,
        pipeline_id -> BigInt,
        version -> Text,
        build_id -> Nullable<BigInt>,
        revision_id -> BigInt,
        commit_sha -> Text,
        branch -> Text,
        message -> Text,
        author -> Text,
        fixes_release_id -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    artifacts (id) {
        id -> BigInt,
        release_id -> BigInt,
        path -> Text,
        sha256 -> Text,
        size -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    deployments (id) {
        id -> BigInt,
        pipeline_id -> BigInt,
        release_id -> BigInt,
        stage -> Text,
        attempt -> Integer,
        state -> Text,
        trigger -> Text,
        requested_by -> Text,
        reason -> Nullable<Text>,
        superseded_by -> Nullable<BigInt>,
        runner -> Nullable<Text>,
        heartbeat_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
        error -> Nullable<Text>,
        operation -> Nullable<Text>,
        override_by -> Nullable<Text>,
        override_reason -> Nullable<Text>,
    }
}

diesel::table! {
    task_runs (id) {
        id -> BigInt,
        deployment_id -> Nullable<BigInt>,
        build_id -> Nullable<BigInt>,
        position -> Integer,
        name -> Text,
        kind -> Text,
        state -> Text,
        exit_code -> Nullable<Integer>,
        created_at -> Timestamp,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    log_chunks (id) {
        id -> BigInt,
        task_run_id -> BigInt,
        seq -> BigInt,
        stream -> Text,
        text -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    approvals (id) {
        id -> BigInt,
        deployment_id -> BigInt,
        pipeline_id -> BigInt,
        phase -> Text,
        state -> Text,
        approvers -> Text,
        policy -> Text,
        requester_can_approve -> Bool,
        exclude_authors -> Bool,
        fresh_sign_in_secs -> Nullable<BigInt>,
        requested_by -> Text,
        base_release -> Nullable<Text>,
        commits -> Text,
        deadline -> Timestamp,
        warned_at -> Nullable<Timestamp>,
        reason -> Nullable<Text>,
        closed_by -> Nullable<Text>,
        created_at -> Timestamp,
        closed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    approval_decisions (id) {
        id -> BigInt,
        approval_id -> BigInt,
        user_name -> Text,
        groups -> Text,
        decision -> Text,
        comment -> Nullable<Text>,
        defer_until -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    gate_samples (id) {
        id -> BigInt,
        deployment_id -> BigInt,
        phase -> Text,
        round -> Integer,
        check_name -> Text,
        sampled_at -> Timestamp,
        duration_ms -> BigInt,
        request -> Text,
        value -> Text,
        verdict -> Text,
        created_at -> Timestamp,
        gate_run_id -> Nullable<BigInt>,
        body -> Nullable<Text>,
        scheduled_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    gate_runs (id) {
        id -> BigInt,
        deployment_id -> BigInt,
        pipeline -> Text,
        release_version -> Text,
        stage -> Text,
        phase -> Text,
        state -> Text,
        started_at -> Timestamp,
        deadline_at -> Timestamp,
        next_at -> Nullable<Timestamp>,
        round -> Integer,
        green_since -> Nullable<Timestamp>,
        progress -> Text,
        last_results -> Text,
        reason -> Nullable<Text>,
        question -> Nullable<Text>,
        finished_by -> Nullable<Text>,
        finished_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    apps (id) {
        id -> BigInt,
        pipeline_id -> BigInt,
        name -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    slots (id) {
        id -> BigInt,
        app_id -> BigInt,
        name -> Text,
        release_id -> Nullable<BigInt>,
        process_state -> Text,
        port -> Nullable<Integer>,
        workdir -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        settings -> Text,
        since -> Nullable<Timestamp>,
        last_swap_at -> Nullable<Timestamp>,
        previous_release_id -> Nullable<BigInt>,
        error -> Nullable<Text>,
    }
}

diesel::table! {
    slot_swaps (id) {
        id -> BigInt,
        app_id -> BigInt,
        from_slot -> Text,
        to_slot -> Text,
        state -> Text,
        preview -> Bool,
        from_release_id -> Nullable<BigInt>,
        to_release_id -> Nullable<BigInt>,
        requested_by -> Text,
        decided_by -> Nullable<Text>,
        error -> Nullable<Text>,
        created_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    users (id) {
        id -> BigInt,
        username -> Text,
        display_name -> Text,
        email -> Nullable<Text>,
        role -> Text,
        password_hash -> Nullable<Text>,
        sso_subject -> Nullable<Text>,
        disabled -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    groups (id) {
        id -> BigInt,
        name -> Text,
        source -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    user_groups (user_id, group_id) {
        user_id -> BigInt,
        group_id -> BigInt,
        created_at -> Timestamp,
        source -> Text,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> BigInt,
        user_id -> BigInt,
        name -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    secrets (id) {
        id -> BigInt,
        pipeline_id -> BigInt,
        name -> Text,
        ciphertext -> Binary,
        nonce -> Binary,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        at -> Timestamp,
        actor -> Text,
        action -> Text,
        subject -> Text,
        detail -> Text,
        prev_hash -> Text,
        hash -> Text,
    }
}

diesel::table! {
    notification_deliveries (id) {
        id -> BigInt,
        pipeline_id -> BigInt,
        pipeline -> Text,
        notification -> Text,
        url -> Text,
        format -> Text,
        secret_name -> Nullable<Text>,
        event -> Text,
        body -> Text,
        state -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        last_attempt_at -> Nullable<Timestamp>,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> BigInt,
        pipeline_id -> BigInt,
        provider -> Text,
        delivery_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    freezes (id) {
        id -> BigInt,
        pipeline_id -> Nullable<BigInt>,
        stage -> Nullable<Text>,
        kind -> Text,
        cron -> Nullable<Text>,
        duration_secs -> Nullable<BigInt>,
        timezone -> Nullable<Text>,
        starts_at -> Nullable<Timestamp>,
        ends_at -> Nullable<Timestamp>,
        reason -> Text,
        created_by -> Text,
        created_at -> Timestamp,
        lifted_at -> Nullable<Timestamp>,
        lifted_by -> Nullable<Text>,
    }
}

diesel::table! {
    settings (name) {
        name -> Text,
        value -> Text,
        updated_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    agents (id) {
        id -> BigInt,
        name -> Text,
        token_hash -> Text,
        last_seen_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    source_heads (id) {
        id -> BigInt,
        pipeline_id -> BigInt,
        branch -> Text,
        commit_sha -> Nullable<Text>,
        error -> Nullable<Text>,
        checked_at -> Timestamp,
        changed_at -> Timestamp,
    }
}

diesel::table! {
    trigger_runs (id) {
        id -> BigInt,
        pipeline_id -> BigInt,
        stage -> Text,
        scheduled_for -> Timestamp,
        fired_at -> Timestamp,
        outcome -> Text,
        detail -> Text,
        release_id -> Nullable<BigInt>,
        deployment_id -> Nullable<BigInt>,
        instance -> Text,
    }
}

diesel::table! {
    sessions (id) {
        id -> BigInt,
        id_hash -> Text,
        user_id -> BigInt,
        created_at -> Timestamp,
        last_seen_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    sign_in_attempts (bucket) {
        bucket -> Text,
        window_start -> Timestamp,
        attempts -> Integer,
    }
}

diesel::joinable!(definition_revisions -> pipelines (pipeline_id));
diesel::joinable!(stages -> pipelines (pipeline_id));
diesel::joinable!(builds -> pipelines (pipeline_id));
diesel::joinable!(releases -> pipelines (pipeline_id));
diesel::joinable!(releases -> builds (build_id));
diesel::joinable!(releases -> definition_revisions (revision_id));
diesel::joinable!(artifacts -> releases (release_id));
diesel::joinable!(deployments -> releases (release_id));
diesel::joinable!(deployments -> pipelines (pipeline_id));
diesel::joinable!(task_runs -> deployments (deployment_id));
diesel::joinable!(task_runs -> builds (build_id));
diesel::joinable!(log_chunks -> task_runs (task_run_id));
diesel::joinable!(approvals -> deployments (deployment_id));
diesel::joinable!(approval_decisions -> approvals (approval_id));
diesel::joinable!(gate_samples -> deployments (deployment_id));
diesel::joinable!(gate_runs -> deployments (deployment_id));
diesel::joinable!(apps -> pipelines (pipeline_id));
diesel::joinable!(slots -> apps (app_id));
diesel::joinable!(slots -> releases (release_id));
diesel::joinable!(slot_swaps -> apps (app_id));
diesel::joinable!(user_groups -> users (user_id));
diesel::joinable!(user_groups -> groups (group_id));
diesel::joinable!(api_tokens -> users (user_id));
diesel::joinable!(secrets -> pipelines (pipeline_id));
diesel::joinable!(webhook_deliveries -> pipelines (pipeline_id));
diesel::joinable!(notification_deliveries -> pipelines (pipeline_id));
diesel::joinable!(freezes -> pipelines (pipeline_id));
diesel::joinable!(source_heads -> pipelines (pipeline_id));
diesel::joinable!(trigger_runs -> pipelines (pipeline_id));

diesel::allow_tables_to_appear_in_same_query!(
    pipelines,
    definition_revisions,
    stages,
    builds,
    releases,
    artifacts,
    deployments,
    task_runs,
    log_chunks,
    approvals,
    approval_decisions,
    gate_samples,
    gate_runs,
    apps,
    slots,
    slot_swaps,
    users,
    groups,
    user_groups,
    api_tokens,
    secrets,
    audit_events,
    webhook_deliveries,
    notification_deliveries,
    freezes,
    settings,
    agents,
    source_heads,
    trigger_runs,
);
