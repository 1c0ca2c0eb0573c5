//! SELECT over the catalog views, expression evaluation and the system functions of B0.5.

use super::*;

/// One joined row: an index into each source's rows (None for a LEFT JOIN miss).
type Combo = Vec<Option<usize>>;

const AGGREGATES: &[&str] = &["COUNT", "MAX", "MIN", "SUM"];

fn is_aggregate(x: &Expr) -> bool {
    matches!(x, Expr::Call(n, _) if AGGREGATES.contains(&n.as_str()))
}

fn like(text: &str, pat: &str) -> bool {
    fn go(t: &[char], p: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('%') => (0..=t.len()).any(|i| go(&t[i..], &p[1..])),
            Some('_') => !t.is_empty() && go(&t[1..], &p[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|c| *c == ']') else {
                    return false;
                };
                let set = &p[1..end];
                let (neg, set) = if set.first() == Some(&'^') {
                    (true, &set[1..])
                } else {
                    (false, set)
                };
                let Some(c) = t.first() else { return false };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= (set[i]..=set[i + 2]).contains(c);
                        i += 3;
                    } else {
                        hit |= set[i] == *c;
                        i += 1;
                    }
                }
                hit != neg && go(&t[1..], &p[end + 1..])
            }
            Some(c) => t.first() == Some(c) && go(&t[1..], &p[1..]),
        }
    }
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<char> = pat.to_lowercase().chars().collect();
    go(&t, &p)
}

fn bit(b: bool) -> Value {
    Value::Bit(b)
}
fn s(x: &str) -> Value {
    Value::Str(x.to_string())
}
fn opt_s(x: &Option<String>) -> Value {
    x.as_ref().map(|v| Value::Str(v.clone())).unwrap_or(Value::Null)
}
fn int(i: impl Into<i64>) -> Value {
    Value::Int(i.into())
}

fn server_type_desc(k: char) -> &'static str {
    match k {
        'S' => "SQL_LOGIN",
        'U' => "WINDOWS_LOGIN",
        'G' => "WINDOWS_GROUP",
        'R' => "SERVER_ROLE",
        'C' => "CERTIFICATE_MAPPED_LOGIN",
        'K' => "ASYMMETRIC_KEY_MAPPED_LOGIN",
        'E' => "EXTERNAL_LOGIN",
        _ => "EXTERNAL_GROUP",
    }
}

fn db_type_desc(k: char) -> &'static str {
    match k {
        'S' => "SQL_USER",
        'U' => "WINDOWS_USER",
        'G' => "WINDOWS_GROUP",
        'A' => "APPLICATION_ROLE",
        'R' => "DATABASE_ROLE",
        'E' => "EXTERNAL_USER",
        _ => "EXTERNAL_GROUP",
    }
}

fn auth_desc(a: i32) -> &'static str {
    match a {
        1 => "INSTANCE",
        2 => "DATABASE",
        3 => "WINDOWS",
        4 => "EXTERNAL",
        _ => "NONE",
    }
}

fn state_desc(c: char) -> &'static str {
    match c {
        'G' => "GRANT",
        'W' => "GRANT_WITH_GRANT_OPTION",
        _ => "DENY",
    }
}

fn class_desc(c: u8) -> &'static str {
    match c {
        0 => "DATABASE",
        1 => "OBJECT_OR_COLUMN",
        3 => "SCHEMA",
        4 => "DATABASE_PRINCIPAL",
        100 => "SERVER",
        _ => "SERVER_PRINCIPAL",
    }
}

fn perm_cols() -> Vec<Column> {
    vec![
        Column::new("class", SqlType::TinyInt, false),
        Column::new("class_desc", SqlType::NVarChar(60), true),
        Column::new("major_id", SqlType::Int, false),
        Column::new("minor_id", SqlType::Int, false),
        Column::new("grantee_principal_id", SqlType::Int, false),
        Column::new("grantor_principal_id", SqlType::Int, false),
        Column::new("type", SqlType::Char(4), false),
        Column::new("permission_name", SqlType::NVarChar(128), true),
        Column::new("state", SqlType::Char(1), false),
        Column::new("state_desc", SqlType::NVarChar(60), true),
    ]
}

fn perm_row(p: &Perm, server: bool) -> Vec<Value> {
    vec![
        int(p.class),
        s(class_desc(p.class)),
        int(p.major),
        int(p.minor),
        int(p.grantee),
        int(p.grantor),
        s(&format!("{:<4}", p.code)),
        s(permission_name(&p.code, server)),
        s(&p.state.to_string()),
        s(state_desc(p.state)),
    ]
}

impl Exec<'_> {
    pub(super) fn select_stmt(&mut self, sel: &Select, inproc: bool) -> R {
        let assigns = sel.items.iter().any(|i| matches!(i, SelectItem::Assign(..)));
        let (cols, rows) = self.run_select(sel)?;
        if assigns {
            self.last_rowcount = rows.len() as i64;
            // SELECT @v = … assigns from the last row and returns no result set.
            if let Some(last) = rows.last() {
                let targets: Vec<String> = sel
                    .items
                    .iter()
                    .filter_map(|i| {
                        if let SelectItem::Assign(v, _) = i {
                            Some(v.clone())
                        } else {
                            None
                        }
                    })
                    .collect();
                for (v, val) in targets.iter().zip(last.iter()) {
                    self.set_var(v, val.clone())?;
                }
            }
            return Ok(());
        }
        let n = rows.len() as u64;
        self.last_rowcount = n as i64;
        self.out.push(Out::Rows(cols, rows));
        let status = if self.sess.nocount {
            0
        } else {
            crate::tds::done::COUNT
        };
        self.out.push(Out::Done {
            status,
            curcmd: 0xC1,
            count: n,
            inproc,
        });
        Ok(())
    }

    /// Runs a SELECT and returns its columns and rows.
    pub(super) fn run_select(&mut self, sel: &Select) -> R<(Vec<Column>, Vec<Vec<Value>>)> {
        self.run_select_in(sel, &Env::default())
    }

    /// Runs a SELECT whose expressions may also refer to the columns of `outer` (a correlated
    /// subquery).
    fn run_select_in(&mut self, sel: &Select, outer: &Env<'_>) -> R<(Vec<Column>, Vec<Vec<Value>>)> {
        if !sel.unions.is_empty() {
            return self.run_union(sel, outer);
        }
        let mut srcs: Vec<Src> = Vec::new();
        if let Some(t) = &sel.from {
            srcs.push(self.source(t)?);
        }
        for j in &sel.joins {
            srcs.push(self.source(&j.table)?);
        }
        // Nested-loop join producing combined row index tuples.
        let mut combos: Vec<Vec<Option<usize>>> = vec![vec![]];
        if !srcs.is_empty() {
            combos = srcs[0]
                .rows
                .iter()
                .enumerate()
                .map(|(i, _)| vec![Some(i)])
                .collect();
            for (ji, j) in sel.joins.iter().enumerate() {
                let right = &srcs[ji + 1];
                let mut next = Vec::new();
                for c in &combos {
                    let mut matched = false;
                    for ri in 0..right.rows.len() {
                        let mut cand = c.clone();
                        cand.push(Some(ri));
                        let ok = match &j.on {
                            None => true,
                            Some(on) => {
                                let env = make_env(&srcs[..ji + 2], &cand, outer);
                                self.truth(on, &env)? == Some(true)
                            }
                        };
                        if ok {
                            matched = true;
                            next.push(cand);
                        }
                    }
                    if !matched && j.left {
                        let mut cand = c.clone();
                        cand.push(None);
                        next.push(cand);
                    }
                }
                combos = next;
            }
        }
        if let Some(w) = &sel.filter {
            let mut kept = Vec::new();
            for c in combos {
                let env = make_env(&srcs, &c, outer);
                if self.truth(w, &env)? == Some(true) {
                    kept.push(c);
                }
            }
            combos = kept;
        }
        // Output columns.
        let mut items: Vec<(Expr, String)> = Vec::new();
        for it in &sel.items {
            match it {
                SelectItem::Star(q) => {
                    for src in &srcs {
                        if q.as_ref()
                            .is_some_and(|q| !src.names.iter().any(|n| ci_cmp(n, q).is_eq()))
                        {
                            continue;
                        }
                        for c in &src.cols {
                            items.push((
                                Expr::Column(src.names.first().cloned(), c.name.clone()),
                                c.name.clone(),
                            ));
                        }
                    }
                    if srcs.is_empty() {
                        return Err(Fail::from(SqlError::new(263, &[])));
                    }
                }
                SelectItem::Expr(x, alias) => {
                    let name = alias.clone().unwrap_or_else(|| match x {
                        Expr::Column(_, c) => c.clone(),
                        _ => String::new(),
                    });
                    items.push((x.clone(), name));
                }
                SelectItem::Assign(v, x) => items.push((x.clone(), v.clone())),
            }
        }
        let aggregate = items.iter().any(|(x, _)| is_aggregate(x));
        let mut rows: Vec<(Vec<Value>, Vec<Value>)> = Vec::new();
        if !sel.group_by.is_empty() || sel.having.is_some() {
            // Every plain column of the select list must be grouped (8120 otherwise).
            for (x, _) in &items {
                if let Expr::Column(_, c) = x
                    && !sel
                        .group_by
                        .iter()
                        .any(|g| matches!(g, Expr::Column(_, gc) if ci_cmp(gc, c).is_eq()))
                {
                    return Err(e(8120, &[c]));
                }
            }
            let mut groups: Vec<(Vec<Value>, Vec<Combo>)> = Vec::new();
            for c in &combos {
                let env = make_env(&srcs, c, outer);
                let mut key = Vec::with_capacity(sel.group_by.len());
                for g in &sel.group_by {
                    key.push(self.eval(g, &env)?);
                }
                let same = |k: &Vec<Value>| {
                    k.iter().zip(&key).all(|(a, b)| {
                        (a.is_null() && b.is_null()) || compare(a, b).is_some_and(|o| o.is_eq())
                    })
                };
                match groups.iter_mut().find(|g| same(&g.0)) {
                    Some(g) => g.1.push(c.clone()),
                    None => groups.push((key, vec![c.clone()])),
                }
            }
            if sel.group_by.is_empty() && groups.is_empty() {
                groups.push((vec![], vec![]));
            }
            for (_, members) in &groups {
                let first = members.first().cloned().unwrap_or_default();
                let env = if members.is_empty() {
                    Env::default()
                } else {
                    make_env(&srcs, &first, outer)
                };
                if let Some(h) = &sel.having {
                    let h = self.subst_aggregates(h, &srcs, members)?;
                    if self.truth(&h, &env)? != Some(true) {
                        continue;
                    }
                }
                let mut row = Vec::with_capacity(items.len());
                for (x, _) in &items {
                    let x = self.subst_aggregates(x, &srcs, members)?;
                    row.push(self.eval(&x, &env)?);
                }
                let mut keys = Vec::new();
                for (ox, _) in &sel.order {
                    let ox = self.subst_aggregates(ox, &srcs, members)?;
                    keys.push(self.order_key(&ox, &items, &row, &env)?);
                }
                rows.push((row, keys));
            }
        } else if aggregate {
            let mut row = Vec::new();
            for (x, _) in &items {
                row.push(self.aggregate(x, &srcs, &combos)?);
            }
            rows.push((row, vec![]));
        } else {
            for c in &combos {
                let env = make_env(&srcs, c, outer);
                let mut row = Vec::with_capacity(items.len());
                for (x, _) in &items {
                    row.push(self.eval(x, &env)?);
                }
                let mut keys = Vec::new();
                for (ox, _) in &sel.order {
                    keys.push(self.order_key(ox, &items, &row, &env)?);
                }
                rows.push((row, keys));
            }
        }
        if !sel.order.is_empty() {
            let desc: Vec<bool> = sel.order.iter().map(|o| o.1).collect();
            rows.sort_by(|a, b| {
                for (i, d) in desc.iter().enumerate() {
                    let (x, y) = (&a.1[i], &b.1[i]);
                    let ord = match (x.is_null(), y.is_null()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Less,
                        (false, true) => std::cmp::Ordering::Greater,
                        _ => compare(x, y).unwrap_or(std::cmp::Ordering::Equal),
                    };
                    let ord = if *d { ord.reverse() } else { ord };
                    if ord.is_ne() {
                        return ord;
                    }
                }
                std::cmp::Ordering::Equal
            });
        }
        let mut out: Vec<Vec<Value>> = rows.into_iter().map(|r| r.0).collect();
        if sel.distinct {
            let mut seen: Vec<Vec<Value>> = Vec::new();
            out.retain(|r| {
                let dup = seen.iter().any(|x| {
                    x.iter().zip(r).all(|(a, b)| {
                        compare(a, b).is_some_and(|o| o.is_eq()) || (a.is_null() && b.is_null())
                    })
                });
                if !dup {
                    seen.push(r.clone());
                }
                !dup
            });
        }
        if let Some(t) = &sel.top {
            let n = self.eval(t, &Env::default())?.as_int().unwrap_or(0).max(0) as usize;
            out.truncate(n);
        }
        // Column metadata from the expressions.
        let mut cols = Vec::new();
        for (i, (x, name)) in items.iter().enumerate() {
            let (ty, nullable) = self.expr_type(x, &srcs, out.iter().map(|r| &r[i]));
            cols.push(Column {
                name: name.clone(),
                ty,
                nullable,
            });
        }
        Ok((cols, out))
    }

    /// `A UNION [ALL] B …`: equal column counts (205), duplicates removed unless ALL, then the
    /// ORDER BY (ordinals or the first part's column names) over the combined rows.
    fn run_union(&mut self, sel: &Select, outer: &Env<'_>) -> R<(Vec<Column>, Vec<Vec<Value>>)> {
        let first = Select {
            order: Vec::new(),
            unions: Vec::new(),
            ..sel.clone()
        };
        let (mut cols, mut rows) = self.run_select_in(&first, outer)?;
        for (all, part) in &sel.unions {
            let (pc, pr) = self.run_select_in(part, outer)?;
            if pc.len() != cols.len() {
                return Err(e(205, &[]));
            }
            for (c, p) in cols.iter_mut().zip(&pc) {
                c.nullable |= p.nullable;
            }
            rows.extend(pr);
            if !*all {
                let mut seen: Vec<Vec<Value>> = Vec::new();
                rows.retain(|r| {
                    let dup = seen.iter().any(|x| {
                        x.iter().zip(r).all(|(a, b)| {
                            (a.is_null() && b.is_null()) || compare(a, b).is_some_and(|o| o.is_eq())
                        })
                    });
                    if !dup {
                        seen.push(r.clone());
                    }
                    !dup
                });
            }
        }
        if !sel.order.is_empty() {
            let mut idx = Vec::new();
            for (x, desc) in &sel.order {
                let i = match x {
                    Expr::Int(n) if *n >= 1 && (*n as usize) <= cols.len() => *n as usize - 1,
                    Expr::Column(None, c) => cols
                        .iter()
                        .position(|k| ci_cmp(&k.name, c).is_eq())
                        .ok_or_else(|| e(207, &[c]))?,
                    _ => {
                        return Err(Fail::from(SqlError::unsupported(
                            "ORDER BY expression over a UNION",
                        )));
                    }
                };
                idx.push((i, *desc));
            }
            rows.sort_by(|a, b| {
                for (i, desc) in &idx {
                    let ord = match (a[*i].is_null(), b[*i].is_null()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Less,
                        (false, true) => std::cmp::Ordering::Greater,
                        _ => compare(&a[*i], &b[*i]).unwrap_or(std::cmp::Ordering::Equal),
                    };
                    let ord = if *desc { ord.reverse() } else { ord };
                    if ord.is_ne() {
                        return ord;
                    }
                }
                std::cmp::Ordering::Equal
            });
        }
        Ok((cols, rows))
    }

    fn order_key(&mut self, ox: &Expr, items: &[(Expr, String)], row: &[Value], env: &Env<'_>) -> R<Value> {
        if let Expr::Int(n) = ox
            && *n >= 1
            && (*n as usize) <= row.len()
        {
            return Ok(row[*n as usize - 1].clone());
        }
        if let Expr::Column(None, c) = ox
            && let Some(i) = items.iter().position(|(_, name)| ci_cmp(name, c).is_eq())
        {
            return Ok(row[i].clone());
        }
        self.eval(ox, env)
    }

    /// Replaces the aggregate calls in `x` by their values over `combos` (one group).
    fn subst_aggregates(&mut self, x: &Expr, srcs: &[Src], combos: &[Vec<Option<usize>>]) -> R<Expr> {
        let lit = |v: Value| match v {
            Value::Null => Expr::Null,
            Value::Int(i) => Expr::Int(i),
            Value::Bit(b) => Expr::Int(b as i64),
            Value::Bin(b) => Expr::Bin(b),
            other => Expr::Str(other.as_text().unwrap_or_default()),
        };
        Ok(match x {
            Expr::Call(..) if is_aggregate(x) => lit(self.aggregate(x, srcs, combos)?),
            Expr::Bin2(a, op, b) => Expr::Bin2(
                Box::new(self.subst_aggregates(a, srcs, combos)?),
                op,
                Box::new(self.subst_aggregates(b, srcs, combos)?),
            ),
            Expr::Unary(op, a) => Expr::Unary(op, Box::new(self.subst_aggregates(a, srcs, combos)?)),
            Expr::Cast(a, t) => Expr::Cast(Box::new(self.subst_aggregates(a, srcs, combos)?), t.clone()),
            Expr::Call(n, args) => {
                let mut out = Vec::with_capacity(args.len());
                for a in args {
                    out.push(self.subst_aggregates(a, srcs, combos)?);
                }
                Expr::Call(n.clone(), out)
            }
            other => other.clone(),
        })
    }

    fn aggregate(&mut self, x: &Expr, srcs: &[Src], combos: &[Vec<Option<usize>>]) -> R<Value> {
        let Expr::Call(name, args) = x else {
            return self.eval(x, &Env::default());
        };
        if name == "COUNT" && matches!(args.first(), Some(Expr::Star)) {
            return Ok(int(combos.len() as i64));
        }
        let arg = args.first().cloned().unwrap_or(Expr::Null);
        let mut vals = Vec::new();
        for c in combos {
            let env = make_env(srcs, c, &Env::default());
            let v = self.eval(&arg, &env)?;
            if !v.is_null() {
                vals.push(v);
            }
        }
        Ok(match name.as_str() {
            "COUNT" => int(vals.len() as i64),
            "SUM" => {
                if vals.is_empty() {
                    Value::Null
                } else {
                    int(vals.iter().filter_map(|v| v.as_int()).sum::<i64>())
                }
            }
            "MAX" => vals
                .into_iter()
                .reduce(|a, b| {
                    if compare(&b, &a).is_some_and(|o| o.is_gt()) {
                        b
                    } else {
                        a
                    }
                })
                .unwrap_or(Value::Null),
            _ => vals
                .into_iter()
                .reduce(|a, b| {
                    if compare(&b, &a).is_some_and(|o| o.is_lt()) {
                        b
                    } else {
                        a
                    }
                })
                .unwrap_or(Value::Null),
        })
    }

    fn expr_type<'v>(
        &self,
        x: &Expr,
        srcs: &[Src],
        mut vals: impl Iterator<Item = &'v Value>,
    ) -> (SqlType, bool) {
        match x {
            Expr::Int(_) => (SqlType::Int, false),
            // 'x' is varchar(n), N'x' nvarchar(n); both max when longer than a page allows.
            Expr::VarStr(t) => {
                let n = t.chars().count();
                (
                    if n > 8000 {
                        SqlType::NVarCharMax
                    } else {
                        SqlType::VarChar(n.max(1) as u16)
                    },
                    false,
                )
            }
            Expr::Str(t) => {
                let n = t.encode_utf16().count();
                (
                    if n > 4000 {
                        SqlType::NVarCharMax
                    } else {
                        SqlType::NVarChar(n.max(1) as u16)
                    },
                    false,
                )
            }
            Expr::Column(q, c) => {
                for src in srcs {
                    if q.as_ref()
                        .is_some_and(|q| !src.names.iter().any(|n| ci_cmp(n, q).is_eq()))
                    {
                        continue;
                    }
                    if let Some(col) = src.cols.iter().find(|k| ci_cmp(&k.name, c).is_eq()) {
                        return (col.ty, col.nullable);
                    }
                }
                (SqlType::NVarChar(4000), true)
            }
            Expr::Var(v) => match self.get_var(v) {
                Ok((t, _)) => (t, true),
                Err(_) => (SqlType::NVarChar(4000), true),
            },
            Expr::Cast(_, t) => (type_of(t), true),
            Expr::Call(n, _) => match n.as_str() {
                "COUNT" => (SqlType::Int, true),
                "SERVERPROPERTY" | "LOGINPROPERTY" | "DATABASEPROPERTYEX" => (SqlType::Variant, true),
                "DB_NAME" | "SUSER_SNAME" | "SUSER_NAME" | "USER_NAME" | "SCHEMA_NAME" | "ORIGINAL_LOGIN"
                | "SYSTEM_USER" | "CURRENT_USER" | "SESSION_USER" | "USER" => (sysname(), true),
                "QUOTENAME" => (SqlType::NVarChar(258), true),
                "DB_ID" => (SqlType::SmallInt, true),
                "SUSER_SID" => (SqlType::VarBinary(85), true),
                "IS_SRVROLEMEMBER"
                | "IS_ROLEMEMBER"
                | "IS_MEMBER"
                | "HAS_PERMS_BY_NAME"
                | "USER_ID"
                | "SUSER_ID"
                | "DATABASE_PRINCIPAL_ID"
                | "SCHEMA_ID"
                | "LEN" => (SqlType::Int, true),
                "GETDATE" | "SYSUTCDATETIME" | "GETUTCDATE" | "SYSDATETIME" => (SqlType::DateTime, false),
                "NEWID" => (SqlType::NVarChar(36), false),
                _ => infer(vals.next()),
            },
            Expr::Global(g) => match g.as_str() {
                "@@SPID" => (SqlType::SmallInt, false),
                "@@TRANCOUNT" | "@@ROWCOUNT" | "@@ERROR" => (SqlType::Int, false),
                "@@VERSION" => (SqlType::NVarChar(300), false),
                _ => (sysname(), true),
            },
            Expr::Bin2(_, op, _)
                if matches!(*op, "=" | "<>" | "<" | ">" | "<=" | ">=" | "AND" | "OR" | "LIKE") =>
            {
                (SqlType::Bit, true)
            }
            _ => infer(vals.next()),
        }
    }

    fn source(&mut self, t: &TableRef) -> R<Src> {
        // With an alias, only the alias qualifies the columns (the server's 4104 otherwise).
        let names = vec![t.alias.clone().unwrap_or_else(|| t.name.clone())];
        let shown = match (&t.database, &t.schema) {
            (Some(d), Some(sch)) => format!("{d}.{sch}.{}", t.name),
            (None, Some(sch)) => format!("{sch}.{}", t.name),
            (Some(d), None) => format!("{d}..{}", t.name),
            (None, None) => t.name.clone(),
        };
        let db_id = match &t.database {
            Some(d) => self.cat.db(d).map(|x| x.id).ok_or_else(|| e(911, &[d]))?,
            None => self.sess.db_id,
        };
        let schema = t
            .schema
            .clone()
            .unwrap_or_else(|| "dbo".into())
            .to_ascii_lowercase();
        let name = t.name.to_ascii_lowercase();
        if let Some(args) = &t.args {
            if name == "fn_my_permissions" {
                let mut vals = Vec::new();
                for a in args {
                    vals.push(self.eval(a, &Env::default())?);
                }
                let (cols, rows) = self.fn_my_permissions(&vals)?;
                return Ok(Src { names, cols, rows });
            }
            return Err(e(208, &[&shown]));
        }
        if schema != "sys" && schema != "dbo" {
            return Err(e(208, &[&shown]));
        }
        let (cols, rows) = self.catalog_view(&name, db_id).ok_or_else(|| e(208, &[&shown]))?;
        Ok(Src { names, cols, rows })
    }

    fn catalog_view(&self, name: &str, db_id: i32) -> Option<(Vec<Column>, Vec<Vec<Value>>)> {
        let cat = &*self.cat;
        let db = cat.db_by_id(db_id)?;
        let dt = |n: &str| Column::new(n, SqlType::DateTime, false);
        Some(match name {
            "databases" => {
                let cols = vec![
                    Column::new("name", sysname(), false),
                    Column::new("database_id", SqlType::Int, false),
                    Column::new("source_database_id", SqlType::Int, true),
                    Column::new("owner_sid", SqlType::VarBinary(85), true),
                    dt("create_date"),
                    Column::new("compatibility_level", SqlType::TinyInt, false),
                    Column::new("collation_name", sysname(), true),
                    Column::new("user_access", SqlType::TinyInt, true),
                    Column::new("user_access_desc", SqlType::NVarChar(60), true),
                    Column::new("is_read_only", SqlType::Bit, true),
                    Column::new("state", SqlType::TinyInt, true),
                    Column::new("state_desc", SqlType::NVarChar(60), true),
                    Column::new("snapshot_isolation_state", SqlType::TinyInt, true),
                    Column::new("snapshot_isolation_state_desc", SqlType::NVarChar(60), true),
                    Column::new("is_read_committed_snapshot_on", SqlType::Bit, true),
                    Column::new("recovery_model", SqlType::TinyInt, true),
                    Column::new("recovery_model_desc", SqlType::NVarChar(60), true),
                    Column::new("page_verify_option", SqlType::TinyInt, true),
                    Column::new("page_verify_option_desc", SqlType::NVarChar(60), true),
                    Column::new("is_trustworthy_on", SqlType::Bit, true),
                    Column::new("is_db_chaining_on", SqlType::Bit, true),
                    Column::new("containment", SqlType::TinyInt, true),
                    Column::new("containment_desc", SqlType::NVarChar(60), true),
                    Column::new("target_recovery_time_in_seconds", SqlType::Int, true),
                    Column::new("is_query_store_on", SqlType::Bit, true),
                ];
                let rows = cat
                    .databases
                    .iter()
                    .map(|d| {
                        vec![
                            s(&d.name),
                            int(d.id),
                            Value::Null,
                            Value::Bin(d.owner_sid.clone()),
                            Value::DateTime(d.created),
                            int(d.compat),
                            s(&d.collation),
                            int(d.user_access),
                            s(["MULTI_USER", "SINGLE_USER", "RESTRICTED_USER"][d.user_access as usize % 3]),
                            bit(false),
                            int(0),
                            s("ONLINE"),
                            int(d.snapshot as i64),
                            s(if d.snapshot { "ON" } else { "OFF" }),
                            bit(d.rcsi),
                            int(d.recovery),
                            s(["", "FULL", "BULK_LOGGED", "SIMPLE"][d.recovery as usize % 4]),
                            int(2),
                            s("CHECKSUM"),
                            bit(d.trustworthy || d.id == 4),
                            bit(d.chaining),
                            int(d.containment),
                            s(if d.containment == 1 { "PARTIAL" } else { "NONE" }),
                            int(60),
                            bit(d.id > 4),
                        ]
                    })
                    .collect();
                (cols, rows)
            }
            "server_principals" | "sql_logins" => {
                let mut cols = vec![
                    Column::new("name", sysname(), false),
                    Column::new("principal_id", SqlType::Int, false),
                    Column::new("sid", SqlType::VarBinary(85), true),
                    Column::new("type", SqlType::Char(1), false),
                    Column::new("type_desc", SqlType::NVarChar(60), true),
                    Column::new("is_disabled", SqlType::Bit, true),
                    dt("create_date"),
                    dt("modify_date"),
                    Column::new("default_database_name", sysname(), true),
                    Column::new("default_language_name", sysname(), true),
                    Column::new("credential_id", SqlType::Int, true),
                    Column::new("owning_principal_id", SqlType::Int, true),
                    Column::new("is_fixed_role", SqlType::Bit, false),
                ];
                let logins = name == "sql_logins";
                if logins {
                    cols.push(Column::new("is_policy_checked", SqlType::Bit, true));
                    cols.push(Column::new("is_expiration_checked", SqlType::Bit, true));
                    cols.push(Column::new("password_hash", SqlType::VarBinary(256), true));
                }
                let rows = cat
                    .server_principals
                    .iter()
                    .filter(|p| !logins || p.kind == 'S')
                    .map(|p| {
                        let mut r = vec![
                            s(&p.name),
                            int(p.id),
                            Value::Bin(p.sid.clone()),
                            s(&p.kind.to_string()),
                            s(server_type_desc(p.kind)),
                            bit(p.disabled),
                            Value::DateTime(p.created),
                            Value::DateTime(p.modified),
                            opt_s(&p.default_db),
                            opt_s(&p.default_lang),
                            Value::Null,
                            p.owner.map(int).unwrap_or(Value::Null),
                            bit(p.fixed_role),
                        ];
                        if logins {
                            let sql = p.sql.as_ref();
                            r.push(sql.map(|x| bit(x.policy)).unwrap_or(Value::Null));
                            r.push(sql.map(|x| bit(x.expiration)).unwrap_or(Value::Null));
                            r.push(sql.map(|x| Value::Bin(x.hash.clone())).unwrap_or(Value::Null));
                        }
                        r
                    })
                    .collect();
                (cols, rows)
            }
            "server_role_members" | "database_role_members" => {
                let cols = vec![
                    Column::new("role_principal_id", SqlType::Int, false),
                    Column::new("member_principal_id", SqlType::Int, false),
                ];
                let src = if name == "server_role_members" {
                    &cat.server_role_members
                } else {
                    &db.role_members
                };
                (cols, src.iter().map(|(r, m)| vec![int(*r), int(*m)]).collect())
            }
            "server_permissions" => (
                perm_cols(),
                cat.server_perms.iter().map(|p| perm_row(p, true)).collect(),
            ),
            "database_permissions" => (perm_cols(), db.perms.iter().map(|p| perm_row(p, false)).collect()),
            "database_principals" => {
                let cols = vec![
                    Column::new("name", sysname(), false),
                    Column::new("principal_id", SqlType::Int, false),
                    Column::new("type", SqlType::Char(1), false),
                    Column::new("type_desc", SqlType::NVarChar(60), true),
                    Column::new("default_schema_name", sysname(), true),
                    dt("create_date"),
                    dt("modify_date"),
                    Column::new("owning_principal_id", SqlType::Int, true),
                    Column::new("sid", SqlType::VarBinary(85), true),
                    Column::new("is_fixed_role", SqlType::Bit, false),
                    Column::new("authentication_type", SqlType::Int, false),
                    Column::new("authentication_type_desc", SqlType::NVarChar(60), true),
                    Column::new("default_language_name", sysname(), true),
                    Column::new("default_language_lcid", SqlType::Int, true),
                    Column::new("allow_encrypted_value_modifications", SqlType::Bit, false),
                ];
                let rows = db
                    .principals
                    .iter()
                    .map(|p| {
                        vec![
                            s(&p.name),
                            int(p.id),
                            s(&p.kind.to_string()),
                            s(db_type_desc(p.kind)),
                            opt_s(&p.default_schema),
                            Value::DateTime(p.created),
                            Value::DateTime(p.created),
                            p.owner.map(int).unwrap_or(Value::Null),
                            p.sid
                                .clone()
                                .filter(|x| !x.is_empty())
                                .map(Value::Bin)
                                .unwrap_or(Value::Null),
                            bit(p.fixed_role),
                            int(p.auth_type),
                            s(auth_desc(p.auth_type)),
                            Value::Null,
                            Value::Null,
                            bit(false),
                        ]
                    })
                    .collect();
                (cols, rows)
            }
            "schemas" => {
                let cols = vec![
                    Column::new("name", sysname(), false),
                    Column::new("schema_id", SqlType::Int, false),
                    Column::new("principal_id", SqlType::Int, true),
                ];
                (
                    cols,
                    db.schemas
                        .iter()
                        .map(|x| vec![s(&x.name), int(x.id), int(x.owner)])
                        .collect(),
                )
            }
            "objects" | "tables" | "all_objects" => {
                let cols = vec![
                    Column::new("name", sysname(), false),
                    Column::new("object_id", SqlType::Int, false),
                    Column::new("schema_id", SqlType::Int, false),
                    Column::new("type", SqlType::Char(2), true),
                    Column::new("type_desc", SqlType::NVarChar(60), true),
                ];
                (cols, vec![])
            }
            "configurations" => {
                let cols = vec![
                    Column::new("configuration_id", SqlType::Int, false),
                    Column::new("name", SqlType::NVarChar(35), false),
                    Column::new("value", SqlType::Variant, true),
                    Column::new("value_in_use", SqlType::Variant, true),
                ];
                let (c, r) = cat.contained_auth;
                (
                    cols,
                    vec![vec![
                        int(16376),
                        s("contained database authentication"),
                        Value::Variant(Box::new(int(c))),
                        Value::Variant(Box::new(int(r))),
                    ]],
                )
            }
            "dm_exec_sessions" => {
                let cols = vec![
                    Column::new("session_id", SqlType::SmallInt, false),
                    dt("login_time"),
                    Column::new("host_name", sysname(), true),
                    Column::new("program_name", sysname(), true),
                    Column::new("login_name", sysname(), false),
                    Column::new("original_login_name", sysname(), false),
                    Column::new("status", SqlType::NVarChar(30), false),
                    Column::new("database_id", SqlType::SmallInt, false),
                    Column::new("is_user_process", SqlType::Bit, false),
                    Column::new("open_transaction_count", SqlType::Int, false),
                ];
                let me = self.sess.spid;
                let rows = self
                    .sessions()
                    .iter()
                    .filter(|(_, x)| x.db_id >= 0)
                    .map(|(spid, x)| {
                        vec![
                            int(*spid),
                            Value::DateTime(x.login_time),
                            s(&x.host),
                            s(&x.program),
                            s(&x.login_name),
                            s(&x.login_name),
                            s(if *spid == me { "running" } else { "sleeping" }),
                            int(x.db_id),
                            bit(true),
                            int(if *spid == me { self.sess.trancount } else { 0 }),
                        ]
                    })
                    .collect();
                (cols, rows)
            }
            _ => return None,
        })
    }

    /// fn_my_permissions(securable, class) with implied permissions expanded (B6).
    fn fn_my_permissions(&self, args: &[Value]) -> R<(Vec<Column>, Vec<Vec<Value>>)> {
        let cols = vec![
            Column::new("entity_name", sysname(), true),
            Column::new("subentity_name", sysname(), true),
            Column::new("permission_name", SqlType::NVarChar(60), true),
        ];
        let class = args
            .get(1)
            .and_then(|v| v.as_text())
            .unwrap_or_default()
            .to_ascii_uppercase();
        let mut rows = Vec::new();
        match class.as_str() {
            "SERVER" => {
                for (code, pname, server) in PERMISSIONS {
                    if *server && self.server_perm(code) {
                        rows.push(vec![s("server"), s(""), s(pname)]);
                    }
                }
            }
            "DATABASE" => {
                let db = self.cur_db()?;
                for (code, pname, server) in PERMISSIONS {
                    if !*server && self.db_perm(db, code) {
                        rows.push(vec![s("database"), s(""), s(pname)]);
                    }
                }
            }
            other => {
                return Err(Fail::from(SqlError::unsupported(&format!(
                    "fn_my_permissions class {other}"
                ))));
            }
        }
        Ok((cols, rows))
    }

    /// Three-valued truth of a condition.
    pub(super) fn truth(&mut self, x: &Expr, env: &Env<'_>) -> R<Option<bool>> {
        let v = self.eval(x, env)?;
        Ok(if v.is_null() {
            None
        } else {
            v.as_int().map(|i| i != 0)
        })
    }

    /// Evaluates an expression.
    pub(super) fn eval(&mut self, x: &Expr, env: &Env<'_>) -> R<Value> {
        Ok(match x {
            Expr::Null | Expr::Star => Value::Null,
            Expr::Int(i) => int(*i),
            Expr::Str(t) | Expr::VarStr(t) => s(t),
            Expr::Bin(b) => Value::Bin(b.clone()),
            Expr::Var(v) => self.get_var(v)?.1,
            Expr::Global(g) => self.global(g)?,
            Expr::Column(q, c) => match env.lookup(q.as_deref(), c)? {
                Some(v) => v,
                None => match q {
                    Some(q) if !env.has_source(q) => return Err(e(4104, &[&format!("{q}.{c}")])),
                    Some(q) => return Err(e(207, &[&format!("{q}.{c}")])),
                    None => return Err(e(207, &[c])),
                },
            },
            Expr::Cast(inner, t) => cast_value(self.eval(inner, env)?, type_of(t)),
            Expr::Unary(op, inner) => {
                let v = self.eval(inner, env)?;
                match *op {
                    "NOT" => {
                        if v.is_null() {
                            Value::Null
                        } else {
                            bit(v.as_int() == Some(0))
                        }
                    }
                    _ => v.as_int().map(|i| int(-i)).unwrap_or(Value::Null),
                }
            }
            Expr::Bin2(l, op, r) => {
                match *op {
                    "AND" => {
                        let a = self.truth(l, env)?;
                        if a == Some(false) {
                            return Ok(bit(false));
                        }
                        let b = self.truth(r, env)?;
                        return Ok(match (a, b) {
                            (_, Some(false)) => bit(false),
                            (Some(true), Some(true)) => bit(true),
                            _ => Value::Null,
                        });
                    }
                    "OR" => {
                        let a = self.truth(l, env)?;
                        if a == Some(true) {
                            return Ok(bit(true));
                        }
                        let b = self.truth(r, env)?;
                        return Ok(match (a, b) {
                            (_, Some(true)) => bit(true),
                            (Some(false), Some(false)) => bit(false),
                            _ => Value::Null,
                        });
                    }
                    _ => {}
                }
                let a = self.eval(l, env)?;
                let b = self.eval(r, env)?;
                binop(&a, op, &b)?
            }
            Expr::InList(l, list, neg) => {
                let a = self.eval(l, env)?;
                if a.is_null() {
                    return Ok(Value::Null);
                }
                let mut hit = false;
                for it in list {
                    let b = self.eval(it, env)?;
                    hit |= compare(&a, &b).is_some_and(|o| o.is_eq());
                }
                bit(hit != *neg)
            }
            Expr::InSelect(l, sel, neg) => {
                let a = self.eval(l, env)?;
                if a.is_null() {
                    return Ok(Value::Null);
                }
                let (_, rows) = self.run_select_in(sel, env)?;
                let hit = rows.iter().any(|r| {
                    r.first()
                        .is_some_and(|b| compare(&a, b).is_some_and(|o| o.is_eq()))
                });
                bit(hit != *neg)
            }
            Expr::IsNull(inner, not) => {
                let v = self.eval(inner, env)?;
                bit(v.is_null() != *not)
            }
            Expr::Exists(sel) => {
                let (_, rows) = self.run_select_in(sel, env)?;
                bit(!rows.is_empty())
            }
            Expr::Subquery(sel) => {
                let (_, rows) = self.run_select_in(sel, env)?;
                rows.first()
                    .and_then(|r| r.first().cloned())
                    .unwrap_or(Value::Null)
            }
            Expr::Case(op, arms, els) => {
                let base = match op {
                    Some(o) => Some(self.eval(o, env)?),
                    None => None,
                };
                for (w, t) in arms {
                    let hit = match &base {
                        Some(b) => {
                            let wv = self.eval(w, env)?;
                            compare(b, &wv).is_some_and(|o| o.is_eq())
                        }
                        None => self.truth(w, env)? == Some(true),
                    };
                    if hit {
                        return self.eval(t, env);
                    }
                }
                match els {
                    Some(x) => self.eval(x, env)?,
                    None => Value::Null,
                }
            }
            Expr::Call(name, args) => self.call(name, args, env)?,
        })
    }

    fn global(&self, g: &str) -> R<Value> {
        Ok(match g {
            "@@SPID" => int(self.sess.spid),
            "@@TRANCOUNT" => int(self.sess.trancount),
            "@@VERSION" => s(&self.ident.version_string()),
            "@@SERVERNAME" => s(&self.ident.server_name),
            "@@SERVICENAME" => s("MSSQLSERVER"),
            "@@LANGUAGE" => s("us_english"),
            "@@ROWCOUNT" => int(self.last_rowcount),
            "@@ERROR" => int(self.last_error),
            "@@OPTIONS" => int(5496),
            "@@MAX_PRECISION" => int(38),
            "@@TEXTSIZE" => int(2147483647),
            other => return Err(e(137, &[other])),
        })
    }

    fn principal_name_in_db(&self, id: i32) -> Option<String> {
        self.cur_db().ok()?.principal_by_id(id).map(|p| p.name.clone())
    }

    fn call(&mut self, name: &str, args: &[Expr], env: &Env<'_>) -> R<Value> {
        let mut v = Vec::with_capacity(args.len());
        for a in args {
            v.push(self.eval(a, env)?);
        }
        let arg = |i: usize| v.get(i).cloned().unwrap_or(Value::Null);
        let text = |i: usize| v.get(i).and_then(|x| x.as_text());
        Ok(match name {
            "SERVERPROPERTY" => Value::Variant(Box::new(self.server_property(&text(0).unwrap_or_default()))),
            "DB_NAME" => match v.first().filter(|x| !x.is_null()) {
                None => self.cur_db().map(|d| s(&d.name)).unwrap_or(Value::Null),
                Some(id) => id
                    .as_int()
                    .and_then(|i| self.cat.db_by_id(i as i32))
                    .map(|d| s(&d.name))
                    .unwrap_or(Value::Null),
            },
            "DB_ID" => match text(0) {
                None if v.is_empty() => int(self.sess.db_id),
                None => Value::Null,
                Some(n) => self.cat.db(&n).map(|d| int(d.id)).unwrap_or(Value::Null),
            },
            "SUSER_SNAME" | "SUSER_NAME" => match v.first().filter(|x| !x.is_null()) {
                None => s(&self.sess.login_name),
                Some(Value::Bin(b)) => self
                    .cat
                    .login_by_sid(b)
                    .map(|p| s(&p.name))
                    .unwrap_or(Value::Null),
                Some(x) => x
                    .as_int()
                    .and_then(|i| self.cat.login_by_id(i as i32))
                    .map(|p| s(&p.name))
                    .unwrap_or(Value::Null),
            },
            "SUSER_SID" => match text(0) {
                None => Value::Bin(self.login_sid()),
                Some(n) => self
                    .cat
                    .login(&n)
                    .map(|p| Value::Bin(p.sid.clone()))
                    .unwrap_or(Value::Null),
            },
            "SUSER_ID" => match text(0) {
                None => int(self.sess.login_id),
                Some(n) => self.cat.login(&n).map(|p| int(p.id)).unwrap_or(Value::Null),
            },
            "ORIGINAL_LOGIN" | "SYSTEM_USER" => s(&self.sess.login_name),
            "USER_NAME" | "CURRENT_USER" | "SESSION_USER" | "USER" => {
                let id = match v.first().filter(|x| !x.is_null()) {
                    Some(x) => x.as_int().map(|i| i as i32),
                    None => self.cur_db().ok().and_then(|d| self.user_in(d)),
                };
                id.and_then(|i| self.principal_name_in_db(i))
                    .map(|n| s(&n))
                    .unwrap_or(Value::Null)
            }
            "USER_ID" | "DATABASE_PRINCIPAL_ID" => match text(0) {
                None => self
                    .cur_db()
                    .ok()
                    .and_then(|d| self.user_in(d))
                    .map(int)
                    .unwrap_or(Value::Null),
                Some(n) => self
                    .cur_db()?
                    .principal(&n)
                    .map(|p| int(p.id))
                    .unwrap_or(Value::Null),
            },
            "SCHEMA_ID" => {
                let db = self.cur_db()?;
                let n = text(0).unwrap_or_else(|| {
                    self.user_in(db)
                        .and_then(|u| db.principal_by_id(u))
                        .and_then(|p| p.default_schema.clone())
                        .unwrap_or_else(|| "dbo".into())
                });
                db.schema(&n).map(|x| int(x.id)).unwrap_or(Value::Null)
            }
            "SCHEMA_NAME" => {
                let db = self.cur_db()?;
                match arg(0).as_int() {
                    Some(i) => db
                        .schemas
                        .iter()
                        .find(|x| x.id == i as i32)
                        .map(|x| s(&x.name))
                        .unwrap_or(Value::Null),
                    None => {
                        let n = self
                            .user_in(db)
                            .and_then(|u| db.principal_by_id(u))
                            .and_then(|p| p.default_schema.clone())
                            .unwrap_or_else(|| "dbo".into());
                        s(&n)
                    }
                }
            }
            "IS_SRVROLEMEMBER" => {
                let role = text(0).unwrap_or_default();
                let Some(r) = self.cat.login(&role).filter(|p| p.kind == 'R') else {
                    return Ok(Value::Null);
                };
                let who = match text(1) {
                    Some(l) => match self.cat.login(&l) {
                        Some(p) => p.id,
                        None => return Ok(Value::Null),
                    },
                    None => self.sess.login_id,
                };
                let roles = self.cat.server_roles_of(who);
                int((roles.contains(&r.id) || (r.fixed_role && roles.contains(&3))) as i64)
            }
            "IS_ROLEMEMBER" | "IS_MEMBER" => {
                let db = self.cur_db()?;
                let role = text(0).unwrap_or_default();
                let Some(r) = db.principal(&role).filter(|p| p.kind == 'R') else {
                    return Ok(Value::Null);
                };
                let who = match text(1) {
                    Some(u) => match db.principal(&u) {
                        Some(p) => p.id,
                        None => return Ok(Value::Null),
                    },
                    None => match self.user_in(db) {
                        Some(u) => u,
                        None => return Ok(int(0)),
                    },
                };
                let member = db.roles_of(who).contains(&r.id) || (who == 1 && r.fixed_role);
                int(member as i64)
            }
            "HAS_PERMS_BY_NAME" => {
                // A NULL class means the server.
                let class = text(1).unwrap_or_else(|| "SERVER".into()).to_ascii_uppercase();
                let perm = text(2).unwrap_or_default();
                let Some((code, server)) = permission_code(&perm) else {
                    return Ok(Value::Null);
                };
                match class.as_str() {
                    "SERVER" => int(self.server_perm(code) as i64),
                    "DATABASE" => {
                        let dbn = text(0).unwrap_or_default();
                        let Some(db) = self.cat.db(&dbn) else {
                            return Ok(Value::Null);
                        };
                        int((!server && self.db_perm(db, code)) as i64)
                    }
                    _ => Value::Null,
                }
            }
            "LOGINPROPERTY" => {
                let Some(l) = text(0).and_then(|n| self.cat.login(&n).cloned()) else {
                    return Ok(Value::Null);
                };
                let Some(sql) = l.sql else { return Ok(Value::Null) };
                let p = text(1).unwrap_or_default().to_ascii_lowercase();
                Value::Variant(Box::new(match p.as_str() {
                    "islocked" | "isexpired" => int(0),
                    "ismustchange" => int(sql.must_change as i64),
                    "passwordlastsettime" => Value::DateTime(l.modified),
                    "passwordhash" => Value::Bin(sql.hash.clone()),
                    "defaultdatabase" => opt_s(&l.default_db),
                    "defaultlanguage" => opt_s(&l.default_lang),
                    "badpasswordcount" => int(0),
                    _ => Value::Null,
                }))
            }
            "QUOTENAME" => match text(0) {
                None => Value::Null,
                // More than 128 UTF-16 code units (the length of sysname) gives NULL.
                Some(t) if t.encode_utf16().count() > 128 => Value::Null,
                Some(t) => {
                    let q = text(1).unwrap_or_else(|| "[".into());
                    let (open, close) = match q.as_str() {
                        "[" | "]" => ('[', ']'),
                        "'" => ('\'', '\''),
                        "\"" => ('"', '"'),
                        "(" | ")" => ('(', ')'),
                        "<" | ">" => ('<', '>'),
                        "{" | "}" => ('{', '}'),
                        "`" => ('`', '`'),
                        _ => return Ok(Value::Null),
                    };
                    let mut out = String::new();
                    out.push(open);
                    for ch in t.chars() {
                        out.push(ch);
                        if ch == close {
                            out.push(ch);
                        }
                    }
                    out.push(close);
                    s(&out)
                }
            },
            "REPLICATE" => match (text(0), arg(1).as_int()) {
                (Some(t), Some(n)) if n >= 0 => {
                    // Like the server, the result is cut at 8000 bytes (4000 characters) unless
                    // the input is a max type.
                    let max = self.is_max_typed(&args[0]);
                    let limit = if max { 1 << 20 } else { 4000 };
                    s(&t.repeat((n as usize).min(1 << 20))
                        .chars()
                        .take(limit)
                        .collect::<String>())
                }
                _ => Value::Null,
            },
            "REPLACE" => match (text(0), text(1), text(2)) {
                (Some(a), Some(b), Some(c)) if !b.is_empty() => s(&replace_ci(&a, &b, &c)),
                (Some(a), Some(_), Some(_)) => s(&a),
                _ => Value::Null,
            },
            "LEN" => text(0)
                .map(|t| int(t.trim_end_matches(' ').encode_utf16().count() as i64))
                .unwrap_or(Value::Null),
            "DATALENGTH" => match arg(0).base() {
                Value::Null => Value::Null,
                Value::Bin(b) => int(b.len() as i64),
                Value::Int(_) => int(4),
                other => int(other.as_text().map(|t| t.encode_utf16().count() * 2).unwrap_or(0) as i64),
            },
            "UPPER" => text(0).map(|t| s(&t.to_uppercase())).unwrap_or(Value::Null),
            "LOWER" => text(0).map(|t| s(&t.to_lowercase())).unwrap_or(Value::Null),
            "LTRIM" => text(0).map(|t| s(t.trim_start())).unwrap_or(Value::Null),
            "RTRIM" => text(0).map(|t| s(t.trim_end())).unwrap_or(Value::Null),
            "TRIM" => text(0).map(|t| s(t.trim())).unwrap_or(Value::Null),
            "LEFT" => match (text(0), arg(1).as_int()) {
                (Some(t), Some(n)) => s(&t.chars().take(n.max(0) as usize).collect::<String>()),
                _ => Value::Null,
            },
            "RIGHT" => match (text(0), arg(1).as_int()) {
                (Some(t), Some(n)) => {
                    let c: Vec<char> = t.chars().collect();
                    s(&c[c.len().saturating_sub(n.max(0) as usize)..]
                        .iter()
                        .collect::<String>())
                }
                _ => Value::Null,
            },
            "SUBSTRING" => match (text(0), arg(1).as_int(), arg(2).as_int()) {
                (Some(t), Some(st), Some(n)) => {
                    let from = (st - 1).max(0) as usize;
                    let len = (n + st.min(1) - 1).max(0) as usize;
                    s(&t.chars().skip(from).take(len).collect::<String>())
                }
                _ => Value::Null,
            },
            "ISNULL" => {
                if arg(0).is_null() {
                    arg(1)
                } else {
                    arg(0)
                }
            }
            "COALESCE" => v.iter().find(|x| !x.is_null()).cloned().unwrap_or(Value::Null),
            "NULLIF" => {
                if compare(&arg(0), &arg(1)).is_some_and(|o| o.is_eq()) {
                    Value::Null
                } else {
                    arg(0)
                }
            }
            "IIF" => {
                if arg(0).as_int().is_some_and(|i| i != 0) {
                    arg(1)
                } else {
                    arg(2)
                }
            }
            "CONCAT" => s(&v.iter().filter_map(|x| x.as_text()).collect::<String>()),
            "NEWID" => {
                let mut b = [0u8; 16];
                self.cat.fill(&mut b);
                let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
                s(&format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                ))
            }
            "GETDATE" | "SYSUTCDATETIME" | "GETUTCDATE" | "SYSDATETIME" | "CURRENT_TIMESTAMP" => {
                Value::DateTime(now_ms())
            }
            "COUNT" | "MAX" | "MIN" | "SUM" => {
                return Err(Fail::from(SqlError::unsupported(
                    "aggregate outside a select list",
                )));
            }
            "OBJECT_ID" => Value::Null,
            "ERROR_NUMBER" | "ERROR_MESSAGE" | "ERROR_SEVERITY" | "ERROR_STATE" | "ERROR_LINE"
            | "ERROR_PROCEDURE" => match self.caught.last() {
                None => Value::Null,
                Some((err, line)) => match name {
                    "ERROR_NUMBER" => int(err.number),
                    "ERROR_MESSAGE" => s(&err.message),
                    "ERROR_SEVERITY" => int(err.level),
                    "ERROR_STATE" => int(err.state),
                    "ERROR_LINE" => int(*line),
                    _ => Value::Null,
                },
            },
            "DATABASEPROPERTYEX" => {
                let Some(d) = text(0).and_then(|n| self.cat.db(&n).cloned()) else {
                    return Ok(Value::Null);
                };
                let p = text(1).unwrap_or_default().to_ascii_lowercase();
                Value::Variant(Box::new(match p.as_str() {
                    "status" => s("ONLINE"),
                    "collation" => s(&d.collation),
                    "recovery" => s(["", "FULL", "BULK_LOGGED", "SIMPLE"][d.recovery as usize % 4]),
                    "useraccess" => {
                        s(["MULTI_USER", "SINGLE_USER", "RESTRICTED_USER"][d.user_access as usize % 3])
                    }
                    "updateability" => s("READ_WRITE"),
                    "version" => int(957),
                    "edition" => s(&self.ident.edition),
                    "isautoclose" | "isautoshrink" => int(0),
                    _ => Value::Null,
                }))
            }
            _ => return Err(Fail::from(SqlError::new(195, &[name, "built-in function name"]))),
        })
    }

    /// True when an expression has an `nvarchar(max)`/`varchar(max)` type: a CAST/CONVERT to
    /// max or a variable declared as max.
    fn is_max_typed(&self, x: &Expr) -> bool {
        match x {
            Expr::Cast(_, t) => t.len == Some(-1),
            Expr::Var(v) => {
                matches!(self.get_var(v), Ok((SqlType::NVarCharMax, _)))
                    || matches!(self.get_var(v), Ok((SqlType::VarChar(8000), _)))
            }
            _ => false,
        }
    }

    fn server_property(&self, p: &str) -> Value {
        let id = self.ident;
        match p.to_ascii_lowercase().as_str() {
            "productversion" => s(&id.product_version()),
            "productmajorversion" => s(&id.major.to_string()),
            "productminorversion" => s(&id.minor.to_string()),
            "productbuild" => s(&id.build.to_string()),
            "productlevel" => s(&id.level),
            "productupdatelevel" => s(&id.update_level),
            "edition" => s(&id.edition),
            "engineedition" => int(id.engine_edition),
            "collation" => s("SQL_Latin1_General_CP1_CI_AS"),
            "machinename" | "servername" => s(&id.server_name),
            "instancename" => Value::Null,
            "isintegratedsecurityonly"
            | "ishadrenabled"
            | "isexternalauthenticationonly"
            | "isclustered"
            | "issingleuser" => int(0),
            "processid" => int(std::process::id() as i64),
            _ => Value::Null,
        }
    }
}

/// Case-insensitive REPLACE under the default collation, by characters (lower-casing can
/// change byte lengths, so byte offsets of the lowered text do not index the original).
fn replace_ci(text: &str, pat: &str, with: &str) -> String {
    let fold = |c: &char| c.to_lowercase().collect::<String>();
    let t: Vec<char> = text.chars().collect();
    let p: Vec<String> = pat.chars().map(|c| fold(&c)).collect();
    let mut out = String::new();
    let mut i = 0;
    while i < t.len() {
        if i + p.len() <= t.len() && t[i..i + p.len()].iter().map(fold).eq(p.iter().cloned()) {
            out.push_str(with);
            i += p.len();
        } else {
            out.push(t[i]);
            i += 1;
        }
    }
    out
}

fn infer(v: Option<&Value>) -> (SqlType, bool) {
    match v {
        Some(x) if !x.is_null() => (
            match x.natural_type() {
                SqlType::NVarChar(_) => SqlType::NVarChar(4000),
                t => t,
            },
            true,
        ),
        _ => (SqlType::Int, true),
    }
}

fn binop(a: &Value, op: &str, b: &Value) -> R<Value> {
    if a.is_null() || b.is_null() {
        return Ok(Value::Null);
    }
    let cmp = |f: fn(std::cmp::Ordering) -> bool| compare(a, b).map(|o| bit(f(o))).unwrap_or(Value::Null);
    Ok(match op {
        "=" => cmp(|o| o.is_eq()),
        "<>" => cmp(|o| o.is_ne()),
        "<" => cmp(|o| o.is_lt()),
        ">" => cmp(|o| o.is_gt()),
        "<=" => cmp(|o| o.is_le()),
        ">=" => cmp(|o| o.is_ge()),
        "LIKE" => bit(like(
            &a.as_text().unwrap_or_default(),
            &b.as_text().unwrap_or_default(),
        )),
        "+" => match (a.base(), b.base()) {
            (Value::Str(x), y) => s(&format!("{x}{}", y.as_text().unwrap_or_default())),
            (x, Value::Str(y)) if !matches!(x, Value::Int(_)) => {
                s(&format!("{}{y}", x.as_text().unwrap_or_default()))
            }
            (Value::Bin(x), Value::Bin(y)) => Value::Bin([x.clone(), y.clone()].concat()),
            _ => match (a.as_int(), b.as_int()) {
                (Some(x), Some(y)) => int(x.wrapping_add(y)),
                _ => {
                    return Err(Fail::from(SqlError::new(
                        245,
                        &["nvarchar", &b.as_text().unwrap_or_default(), "int"],
                    )));
                }
            },
        },
        _ => {
            let (Some(x), Some(y)) = (a.as_int(), b.as_int()) else {
                return Err(Fail::from(SqlError::new(
                    245,
                    &["nvarchar", &a.as_text().unwrap_or_default(), "int"],
                )));
            };
            match op {
                "-" => int(x.wrapping_sub(y)),
                "*" => int(x.wrapping_mul(y)),
                "/" | "%" if y == 0 => return Err(Fail::from(SqlError::new(8134, &[]))),
                "/" => int(x.wrapping_div(y)),
                _ => int(x.wrapping_rem(y)),
            }
        }
    })
}

fn make_env<'r>(srcs: &'r [Src], combo: &[Option<usize>], outer: &Env<'r>) -> Env<'r> {
    let mut env = Env {
        frames: Vec::new(),
        outer: outer.frames.iter().chain(outer.outer.iter()).cloned().collect(),
    };
    for (i, src) in srcs.iter().enumerate() {
        let row = combo.get(i).copied().flatten().map(|r| src.rows[r].as_slice());
        env.frames.push((&src.names, &src.cols, row));
    }
    env
}

impl Env<'_> {
    /// True if a source (here or in an enclosing query) is named or aliased `q`.
    fn has_source(&self, q: &str) -> bool {
        self.frames
            .iter()
            .chain(self.outer.iter())
            .any(|(names, _, _)| names.iter().any(|n| ci_cmp(n, q).is_eq()))
    }

    /// Finds a column: first among this query's sources (an unqualified name found in two
    /// of them is 209, as on the server), then in the enclosing queries'.
    fn lookup(&self, q: Option<&str>, c: &str) -> R<Option<Value>> {
        let find = |frames: &[Frame<'_>]| -> Vec<Value> {
            let mut hits = Vec::new();
            for (names, cols, row) in frames {
                if let Some(q) = q
                    && !names.iter().any(|n| ci_cmp(n, q).is_eq())
                {
                    continue;
                }
                if let Some(i) = cols.iter().position(|k| ci_cmp(&k.name, c).is_eq()) {
                    hits.push(row.map(|r| r[i].clone()).unwrap_or(Value::Null));
                }
            }
            hits
        };
        let here = find(&self.frames);
        if here.len() > 1 && q.is_none() {
            return Err(e(209, &[c]));
        }
        if let Some(v) = here.into_iter().next() {
            return Ok(Some(v));
        }
        Ok(find(&self.outer).into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::like;

    #[test]
    fn replace_is_case_insensitive_and_safe_on_non_ascii() {
        // 'İ' lower-cases to two characters: byte offsets of the lowered text would not fit.
        assert_eq!(super::replace_ci("İxAbcab", "AB", "-"), "İx-c-");
        assert_eq!(super::replace_ci("aaa", "a", "bb"), "bbbbbb");
    }

    #[test]
    fn like_handles_wildcards_and_sets_case_insensitively() {
        // (text, pattern, expected): the shapes catalog queries use.
        let cases = [
            ("db_owner", "db[_]%", true),
            ("DB_OWNER", "db_%", true),
            ("x", "y%", false),
            ("abc", "a_c", true),
            ("abc", "a[^b]c", false),
        ];
        for (t, p, want) in cases {
            assert_eq!(like(t, p), want, "{t} LIKE {p}");
        }
    }
}
